"""tests/cli/test_cli.py - triekv-cli against a real server: every command and flag, binary data
through files and pipes, atomic batches, ranges over many pages, exit statuses and messages.

Each test uses its own key prefix; the module's server is shared (conftest.py)."""
import json
import os
import pty
import random
import re
import select
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import (CLI_BIN, FakeServer, Node, b64, base_env, cli_escape, free_port, run_cli,
                      sanitizer_findings, server_range, unb64)

COMMANDS = ["get", "set", "delete", "range", "stats", "watch-stats", "bench"]
ALL_BYTES = bytes(range(256))


def one_line_error(res, *needles):
    """stderr is one line 'triekv-cli: ...' holding each needle."""
    lines = res.err.strip().splitlines()
    assert len(lines) == 1, res
    assert lines[0].startswith("triekv-cli: "), res
    for n in needles:
        assert n in lines[0], "%r should mention %r" % (lines[0], n)
    return lines[0]


# ---- help, version, usage errors ------------------------------------------------------------------

@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_for_every_command(cli, cmd):
    # --help wins anywhere on the line, over any mistake
    for args in ([cmd, "--help"], [cmd, "-h"], ["help", cmd], [cmd, "bogus-word", "--bogus-option", "-h"],
                 ["--server", "http://127.0.0.1:1", cmd, "--help"]):
        res = cli(*args)
        assert res.rc == 0, res
        assert res.text.startswith("usage: triekv-cli %s" % cmd), res
        assert "examples:" in res.text and "\n  triekv-cli %s" % cmd in res.text, res
        assert res.err == ""
    assert cli(cmd, "--help").out == cli("help", cmd).out


def test_overview_help_and_version(cli):
    res = cli("--help")
    assert res.rc == 0
    for cmd in COMMANDS:
        assert re.search(r"^  %s\s" % re.escape(cmd), res.text, re.M), cmd
    assert "TRIEKV_URL" in res.text and "exit status" in res.text
    assert cli("help").out == res.out
    v = cli("--version")
    assert v.rc == 0 and re.fullmatch(r"triekv-cli \d+\.\d+\.\d+\n", v.text), v


@pytest.mark.parametrize("args,needle", [
    ([], "no command given"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["help", "frobnicate"], "unknown command"),
    (["get"], "no key given"),
    (["get", "a", "--frob"], "unknown option --frob"),
    (["get", "a,,b"], "empty"),
    (["get", "--base64", "!!!"], "base64"),
    (["get", "--key"], "--key needs a value"),
    (["set"], "nothing to set"),
    (["set", "novalue"], "has no '='"),
    (["set", "--kv", "onlykey"], "--kv needs two values"),
    (["set", "--json=1", "a=b"], "--json takes no value"),
    (["set", "a=@"], "needs a file name"),
    (["set", "a=@/nonexistent/file"], "cannot read /nonexistent/file"),
    (["set", "--base64", "YQ==!!"], "base64"),
    (["delete"], "no key given"),
    (["range", "extra"], "options only"),
    (["range", "--limit", "0"], "--limit must be"),
    (["range", "--limit", "ten"], "--limit must be"),
    (["range", "--limit"], "--limit needs a value"),
    (["range", "--prefix", "p", "--start", "a"], "not both"),
    (["range", "--base64", "--prefix", "%%"], "base64"),
    (["stats", "extra"], "takes no arguments"),
    (["watch-stats", "--interval", "0.01"], "--interval must be"),
    (["watch-stats", "--count", "0"], "--count must be"),
    (["bench", "--clients", "0"], "--clients must be"),
    (["bench", "--clients", "257"], "--clients must be"),
    (["bench", "--ops", "-5"], "--ops must be"),
    (["bench", "--mix", "get:0"], "no weight above 0"),
    (["bench", "--mix", "get:1,get:2"], "--mix"),
    (["bench", "--mix", "scan:5"], "--mix"),
    (["--server", "ftp://x", "stats"], "expected http://HOST[:PORT]"),
    (["--server", "https://x", "stats"], "plain http"),
    (["--server", "http://x:99999", "stats"], "port"),
    (["--server", "http://x:1/path", "stats"], "no path"),
    (["--timeout", "0", "stats"], "--timeout must be"),
    (["stats", "--timeout", "abc"], "--timeout must be"),
])
def test_usage_errors_exit_2(cli, args, needle):
    res = cli(*args)
    assert res.rc == 2, res
    if args:
        line = one_line_error(res, needle)
    else:  # the overview, then the line
        line = res.err.strip().splitlines()[-1]
        assert line.startswith("triekv-cli: ") and needle in line and "usage:" in res.err, res
    assert "--help" in line, "a usage error points to the help: %r" % line
    assert res.out == b""


def test_usage_error_writes_nothing(cli, server):
    """A mistake found on the command line sends nothing, even for the good items before it."""
    for args in (["set", "ue1=1,ue2"], ["set", "ue1=1", "--kv", "", "x"], ["set", "ue1=1,ue1=2"],
                 ["set", "ue1=1,ue2=@/nonexistent"], ["set", "ue1=-,ue2=-"]):
        res = cli(*args, input=b"stdin")
        assert res.rc == 2, res
        assert server.kv_get("ue1") is None, args
        assert server.kv_get("ue2") is None, args


# ---- set and get: binary data ---------------------------------------------------------------------

@pytest.mark.parametrize("data", [ALL_BYTES, random.Random(7).randbytes(64 * 1024), b""],
                         ids=["all-bytes", "random-64k", "empty"])
def test_binary_round_trip_through_files(cli, server, tmp_path, data):
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    res = cli("set", "bin:file=@%s" % src)
    assert res.rc == 0 and re.fullmatch(r"seq \d+\n", res.text), res
    assert server.kv_get("bin:file") == data, "the server holds other bytes"
    dst = tmp_path / "dst.bin"
    with open(dst, "wb") as f:
        res = cli("get", "bin:file", stdout=f)
    assert res.rc == 0, res
    assert dst.read_bytes() == data, "get to a file changed the bytes"


def test_binary_round_trip_through_pipes(cli, server):
    data = ALL_BYTES * 3 + random.Random(3).randbytes(100000)
    res = cli("set", "bin:pipe=-", input=data)
    assert res.rc == 0, res
    assert server.kv_get("bin:pipe") == data
    # get into a pipe, and a pipe through a second client
    assert cli("get", "bin:pipe").out == data
    env = base_env({"TRIEKV_URL": server.url})
    get = subprocess.Popen([CLI_BIN, "get", "bin:pipe"], stdout=subprocess.PIPE, env=env)
    setp = subprocess.run([CLI_BIN, "set", "bin:pipe2=-"], stdin=get.stdout, capture_output=True, env=env)
    get.stdout.close()
    assert get.wait() == 0 and setp.returncode == 0, setp.stderr
    assert server.kv_get("bin:pipe2") == data


def test_file_and_stdin_with_inline_values_in_one_batch(cli, server, tmp_path):
    f = tmp_path / "v.bin"
    f.write_bytes(b"\x00from file\xff")
    res = cli("set", "mix:a=@%s,mix:b=-" % f, "mix:c=text", "--kv", "mix:d", "x=y", input=b"from stdin\n")
    assert res.rc == 0, res
    assert server.kv_get("mix:a") == b"\x00from file\xff"
    assert server.kv_get("mix:b") == b"from stdin\n"
    assert server.kv_get("mix:c") == b"text"
    assert server.kv_get("mix:d") == b"x=y"


def test_base64_in_and_out(cli, server):
    key, value = b"\x00\x01k\xff", bytes(range(250, 256)) + b"\x00"
    res = cli("set", "--base64", "%s=%s" % (b64(key), b64(value)), "--kv", b64(b"b64:two"), b64(b"\xfe"))
    assert res.rc == 0, res
    assert server.kv_get(key) == value and server.kv_get(b"b64:two") == b"\xfe"
    # one key: its value in base64 and a newline
    res = cli("get", "--base64", b64(key))
    assert res.rc == 0 and res.out == (b64(value) + "\n").encode(), res
    # several, as a table: both columns base64
    res = cli("get", "--base64", "%s,%s" % (b64(key), b64(b"b64:two")))
    assert res.rc == 0
    assert [l.split() for l in res.text.splitlines()] == [["KEY", "VALUE"], [b64(key), b64(value)],
                                                          [b64(b"b64:two"), "/g=="]], res
    # --json: only *_base64 members, even for UTF-8 bytes
    res = cli("get", "--base64", "--json", "%s,%s" % (b64(b"b64:two"), b64(b"b64:none")))
    assert res.rc == 1
    assert res.json() == {"items": [{"key_base64": b64(b"b64:two"), "value_base64": "/g=="}],
                          "missing": [{"key_base64": b64(b"b64:none")}]}
    # padding of the key comes before the separator: "YQ==" "=" "Yg=="
    assert cli("set", "--base64", "YQ===Yg==").rc == 0
    assert server.kv_get("a") == b"b"
    assert cli("set", "--base64", "YWI==").rc == 0 and server.kv_get("ab") == b""  # "YWI=" "=" ""


def test_kv_option_keys_and_values_with_commas_and_equals(cli, server):
    res = cli("set", "--kv", "kv:a,b=c", "x=y,z", "--kv", "kv:=", ",,", "kv:plain=1")
    assert res.rc == 0, res
    assert server.kv_get("kv:a,b=c") == b"x=y,z"
    assert server.kv_get("kv:=") == b",,"
    assert server.kv_get("kv:plain") == b"1"
    # --kv values are literal: no @file, no stdin
    assert cli("set", "--kv", "kv:lit", "@/etc/passwd", "--kv", "kv:dash", "-").rc == 0
    assert server.kv_get("kv:lit") == b"@/etc/passwd" and server.kv_get("kv:dash") == b"-"
    # --key reads such keys back and deletes them
    assert cli("get", "--key", "kv:a,b=c").out == b"x=y,z"
    res = cli("get", "--json", "--key", "kv:a,b=c", "--key", "kv:=")
    assert res.json()["items"] == [{"key": "kv:a,b=c", "value": "x=y,z"}, {"key": "kv:=", "value": ",,"}]
    res = cli("delete", "--key", "kv:a,b=c", "--key", "kv:=")
    assert res.rc == 0 and res.text == "deleted 2 of 2\n"
    assert server.kv_get("kv:a,b=c") is None


# ---- set: one atomic batch -------------------------------------------------------------------------

def test_set_is_atomic_when_the_server_refuses_an_item(cli, server):
    """A key over max_key_size (1024) is only known bad at the server: it refuses the whole batch."""
    res = cli("set", "at:one=1,at:two=2", "--kv", "k" * 1025, "v", "at:three=3")
    assert res.rc == 2, res
    one_line_error(res, "key_too_long", "nothing was changed")
    for k in ("at:one", "at:two", "at:three"):
        assert server.kv_get(k) is None, "%s was written by a refused batch" % k
    # the same batch without the bad item goes through whole
    res = cli("set", "at:one=1,at:two=2,at:three=3")
    assert res.rc == 0 and [server.kv_get(k) for k in ("at:one", "at:two", "at:three")] == [b"1", b"2", b"3"]


def test_set_empty_key_writes_nothing(cli, server):
    for args in (["set", "em:a=1,=2"], ["set", "em:a=1", "--kv", "", "v"], ["set", "--base64", "%s=MQ==,=MQ==" % b64("em:a")]):
        res = cli(*args)
        assert res.rc == 2, res
        one_line_error(res, "empty key")
        assert server.kv_get("em:a") is None


def test_set_prints_the_commit_seq(cli, server):
    res = cli("set", "seq:a=1,seq:b=2")
    assert res.rc == 0
    seq = int(re.fullmatch(r"seq (\d+)\n", res.text).group(1))
    assert server.stats()["seq"] == seq, "the printed seq is not the commit's"
    res = cli("set", "seq:c=3", "--json")
    assert res.rc == 0
    doc = res.json()
    assert doc == {"seq": seq + 1, "count": 1}, doc
    status, headers, _ = server.http("GET", "/kv/seq:c")
    assert headers["ETag"] == '"%d"' % doc["seq"]


def test_set_duplicate_key_is_named_by_the_client(cli, server):
    """The client finds a key given twice itself (the server would refuse it too, less clearly)."""
    for args, shown in ((["set", "dup:a=1,dup:a=2"], "dup:a"), (["set", "dup:a=1", "--kv", "dup:a", "2"], "dup:a"),
                        (["set", "--base64", "%s=MQ==" % b64(b"dup:\x00"), "--kv", b64(b"dup:\x00"), "Mg=="],
                         "dup:\\x00")):
        res = cli(*args)
        assert res.rc == 2, res
        one_line_error(res, "key '%s' is given twice" % shown, "nothing was written")
    assert server.kv_get("dup:a") is None


@pytest.fixture(scope="module")
def limits(workdir):
    """A server with small bulk limits: 100 items and 4 KiB per request."""
    node = Node(workdir, "limits", ["--max-bulk-items", "100", "--max-bulk-bytes", "4096"])
    yield node
    node.stop()
    assert not sanitizer_findings(node.log())


def test_set_over_the_servers_bulk_limits_writes_nothing(limits):
    res = run_cli(["set", ",".join("lim:%03d=x" % i for i in range(101))], url=limits.url)
    assert res.rc == 2, res
    one_line_error(res, "too_many_items", "nothing was changed")
    assert limits.kv_get("lim:000") is None


def test_get_adapts_to_the_servers_bulk_limits(limits):
    """get of more keys, or more value bytes, than one /bulk/get may carry still answers in order."""
    for start in range(0, 250, 50):
        limits.put_many({("lim:%03d" % i).encode(): str(i).encode() for i in range(start, start + 50)})
    keys = ["lim:%03d" % i for i in range(249, -1, -1)]
    res = run_cli(["get", "--json", ",".join(keys)], url=limits.url)
    assert res.rc == 0, res
    assert [(i["key"], i["value"]) for i in res.json()["items"]] == [(k, str(int(k[4:]))) for k in keys]
    for k in ("lim:big1", "lim:big2"):
        assert limits.http("PUT", "/kv/" + k, b"v" * 3000)[0] == 200
    res = run_cli(["get", "--json", "lim:big1,lim:big2"], url=limits.url)  # 6000 bytes > 4096 in one answer
    assert res.rc == 0, res
    assert [i["value"] for i in res.json()["items"]] == ["v" * 3000] * 2
    # one value alone over the answer limit: the server's word, status 2
    assert limits.http("PUT", "/kv/lim:huge", b"v" * 5000)[0] == 200
    res = run_cli(["get", "lim:huge,lim:000"], url=limits.url)
    assert res.rc == 2, res
    one_line_error(res, "response_too_large")


def test_bench_preload_adapts_to_the_servers_bulk_limits(limits):
    res = run_cli(["bench", "--ops", "50", "--keys", "300", "--json"], url=limits.url)
    assert res.rc == 0, res
    assert res.json()["by_op"]["get"]["not_found"] == 0
    assert limits.kv_get("bench:00000299") is not None


def test_set_value_too_large_is_refused(cli, server, tmp_path, workdir):
    """A value over max_value_size: exit 2 and nothing written. Uses a server with a small limit."""
    small = Node(workdir, "small", ["--max-value-size", "1000"])
    try:
        f = tmp_path / "big"
        f.write_bytes(b"x" * 1001)
        res = run_cli(["set", "big:ok=1,big:v=@%s" % f], url=small.url)
        assert res.rc == 2, res
        one_line_error(res, "value_too_large")
        assert small.kv_get("big:ok") is None and small.kv_get("big:v") is None
    finally:
        small.stop()
    assert not sanitizer_findings(small.log())


# ---- get -----------------------------------------------------------------------------------------

def test_get_missing_single_key(cli):
    res = cli("get", "nope:1")
    assert res.rc == 1 and res.out == b"", res
    one_line_error(res, "not found", "nope:1")


def test_get_several_table(cli, server):
    server.put_many({b"tb:a": b"alpha", b"tb:bin": b"\x00\x01\xff", b"tb:nl": b"two\nlines", b"tb:u": "żółw".encode()})
    res = cli("get", "tb:a,tb:bin,tb:nl", "tb:u")
    assert res.rc == 0, res
    lines = res.text.splitlines()
    assert lines[0].split() == ["KEY", "VALUE"]
    rows = [l.split(None, 1) for l in lines[1:]]
    assert rows == [["tb:a", "alpha"], ["tb:bin", "[base64] " + b64(b"\x00\x01\xff")],
                    ["tb:nl", "[base64] " + b64(b"two\nlines")], ["tb:u", "żółw"]], rows
    # the value column starts at one place
    assert len({l.index(r[1]) for l, r in zip(lines[1:], rows)}) == 1


def test_get_several_json_and_missing(cli, server):
    server.put_many({b"gj:a": b"1", b"gj:bin": b"\xff\xfe", b"gj:\xff": b"k"})
    res = cli("get", "gj:a,gj:x,gj:bin", "--json", "--key", "gj:y")
    assert res.rc == 1, res
    assert res.json() == {"items": [{"key": "gj:a", "value": "1"}, {"key": "gj:bin", "value_base64": b64(b"\xff\xfe")}],
                          "missing": [{"key": "gj:x"}, {"key": "gj:y"}]}
    one_line_error(res, "2 of 4 keys not found", "gj:x", "gj:y")
    # a key that is not UTF-8, read through --base64, comes back as key_base64
    res = cli("get", "--json", "--base64", b64(b"gj:\xff"))
    assert res.rc == 0 and res.json()["items"] == [{"key_base64": b64(b"gj:\xff"), "value_base64": b64(b"k")}]
    # one key with --json is JSON too
    res = cli("get", "gj:a", "--json")
    assert res.rc == 0 and res.json() == {"items": [{"key": "gj:a", "value": "1"}], "missing": []}
    # table with a missing key: found ones printed, status 1
    res = cli("get", "gj:a,gj:x")
    assert res.rc == 1 and res.text.splitlines()[1].split() == ["gj:a", "1"]


def test_get_many_keys_in_chunks(cli, server):
    """More keys than one /bulk/get chunk (1000) keep their order."""
    items = {("ch:%05d" % i).encode(): str(i).encode() for i in range(2100)}
    server.put_many(items)
    keys = sorted(items, reverse=True)
    res = cli("get", "--json", ",".join(k.decode() for k in keys))
    assert res.rc == 0, res
    got = res.json()["items"]
    assert [i["key"].encode() for i in got] == keys
    assert all(items[i["key"].encode()] == i["value"].encode() for i in got)


# ---- delete --------------------------------------------------------------------------------------

def test_delete_reports_how_many_existed(cli, server):
    server.put_many({b"dl:a": b"1", b"dl:b": b"2"})
    res = cli("delete", "dl:a,dl:b,dl:none")
    assert res.rc == 0 and res.text == "deleted 2 of 3\n", res
    assert server.kv_get("dl:a") is None and server.kv_get("dl:b") is None
    res = cli("delete", "dl:a")
    assert res.rc == 0 and res.text == "deleted 0 of 1\n", res
    server.put_many({b"dl:\x00": b"x"})
    res = cli("delete", "--base64", "--json", "%s,%s" % (b64(b"dl:\x00"), b64(b"dl:z")))
    assert res.rc == 0
    doc = res.json()
    assert doc["deleted"] == 1 and doc["count"] == 2 and doc["seq"] == server.stats()["seq"], doc
    assert server.kv_get(b"dl:\x00") is None


# ---- range ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def paged(server):
    """2500 keys under pg: (25 pages of 100), some with bytes that need escaping."""
    items = {("pg:%04d" % i).encode(): ("value %d" % i).encode() for i in range(2500)}
    items[b"pg:0007"] = b"tab\there\\back\nnl\x00\xff\x7f\xc2\x85 \xe2\x82\xac"
    items[b"pg:\xff\x00raw"] = ALL_BYTES
    items[b"pg:\xc3\xa9t\xc3\xa9"] = "été".encode()
    server.put_many(items)
    return sorted(items.items())


def test_range_across_many_pages_equals_the_server(cli, server, paged):
    res = cli("range", "--prefix", "pg:")
    assert res.rc == 0, res
    expect = ["%s\t%s" % (cli_escape(k), cli_escape(v)) for k, v in server_range(server, "prefix=pg%3A")]
    assert len(expect) == len(paged) == 2502
    assert res.text.splitlines() == expect
    # the whole store, too
    full = cli("range")
    assert full.rc == 0
    assert full.text.splitlines() == ["%s\t%s" % (cli_escape(k), cli_escape(v)) for k, v in server_range(server)]


def test_range_json_and_base64_are_lossless(cli, server, paged):
    res = cli("range", "--prefix", "pg:", "--json")
    assert res.rc == 0
    got = []
    for it in res.json()["items"]:
        k = it["key"].encode() if "key" in it else unb64(it["key_base64"])
        v = it["value"].encode() if "value" in it else unb64(it["value_base64"])
        got.append((k, v))
    assert got == paged
    res = cli("range", "--prefix", b64("pg:"), "--base64")
    assert res.rc == 0
    assert [tuple(unb64(x) for x in l.split("\t")) for l in res.text.splitlines()] == paged


def test_range_start_end_limit(cli, server, paged):
    res = cli("range", "--start", "pg:0100", "--end", "pg:0350")
    keys = [l.split("\t")[0] for l in res.text.splitlines()]
    assert res.rc == 0 and keys == ["pg:%04d" % i for i in range(100, 350)]
    res = cli("range", "--start", "pg:0100", "--end", "pg:0350", "--limit", "7")
    assert [l.split("\t")[0] for l in res.text.splitlines()] == ["pg:%04d" % i for i in range(100, 107)]
    res = cli("range", "--prefix", "pg:", "--limit", "1234", "--keys-only")  # across 13 pages
    assert res.rc == 0 and res.text.splitlines() == [cli_escape(k) for k, _ in paged[:1234]]
    res = cli("range", "--start", "pg:2495", "--limit", "3")
    assert [l.split("\t")[0] for l in res.text.splitlines()] == ["pg:2495", "pg:2496", "pg:2497"]
    res = cli("range", "--base64", "--start", b64("pg:0010"), "--end", b64("pg:0012"))
    assert [unb64(l.split("\t")[0]) for l in res.text.splitlines()] == [b"pg:0010", b"pg:0011"]


def test_range_keys_only_and_json(cli, paged):
    res = cli("range", "--prefix", "pg:", "--keys-only")
    assert res.rc == 0 and "\t" not in res.text
    assert res.text.splitlines() == [cli_escape(k) for k, _ in paged]
    res = cli("range", "--prefix", "pg:0", "--keys-only", "--json", "--limit", "150")
    items = res.json()["items"]
    assert items == [{"key": "pg:%04d" % i} for i in range(150)]


def test_range_empty(cli):
    res = cli("range", "--prefix", "nothing-here:")
    assert res.rc == 0 and res.out == b""
    res = cli("range", "--prefix", "nothing-here:", "--json")
    assert res.rc == 0 and res.json() == {"items": []}


def test_range_refused_by_the_server(cli):
    res = cli("range", "--start", "b", "--end", "a")
    assert res.rc == 2, res
    one_line_error(res, "bad_range")


# ---- stats and watch-stats --------------------------------------------------------------------------

def test_stats_human(cli, server):
    server.put_many({b"st:big": b"x" * 5000})
    res = cli("stats")
    assert res.rc == 0, res
    st = server.stats()
    t = res.text
    assert t.startswith("triekv main at %s" % server.url)
    assert re.search(r"^keys\s+%s\s" % re.escape("{:,}".format(st["keys"])), t, re.M), t
    assert re.search(r"value bytes \d+(\.\d)? (KiB|MiB|GiB) \(", t), t
    for label in ("operations    gets ", "rates ", "point reads", "cache ", "storage ", "connections ",
                  "replication "):
        assert label in t, label


def test_stats_json_is_the_servers(cli, server):
    res = cli("stats", "--json")
    assert res.rc == 0
    doc = res.json()
    for k in ("keys", "value_bytes", "gets", "sets", "deletes", "hits", "misses", "seq", "cache", "storage",
              "replication", "requests"):
        assert k in doc, k
    assert doc["keys"] == server.stats()["keys"]
    assert cli("--json", "stats").json()["seq"] == doc["seq"], "--json before the command works too"


def test_stats_on_a_replica(cli, replica, server):
    res = cli("stats", url=replica.url)
    assert res.rc == 0
    assert res.text.startswith("triekv replica at %s" % replica.url)
    assert "replication   replica of" in res.text and "applied seq" in res.text


def test_watch_stats_blocks_when_not_a_tty(cli, server):
    res = cli("watch-stats", "--count", "2", "--interval", "0.2")
    assert res.rc == 0, res
    headers = re.findall(r"^triekv-cli watch-stats  (\S+)  refresh (\d+)", res.text, re.M)
    assert headers == [(server.url, "1"), (server.url, "2")], res.text
    assert res.seconds >= 0.2
    assert "\033[" not in res.text, "no terminal codes into a file"
    assert re.search(r"^rates .*over the last 0\.\d s", res.text, re.M), res.text
    assert res.text.count("triekv main at") == 2


def test_watch_stats_json_lines(cli, server):
    res = cli("watch-stats", "--count", "3", "--interval", "0.1", "--json")
    assert res.rc == 0
    docs = [json.loads(l) for l in res.text.splitlines()]
    assert len(docs) == 3 and all("keys" in d for d in docs)
    assert docs[2]["requests"]["stats"] > docs[0]["requests"]["stats"]


def run_on_a_tty(args, server, tty_stream):
    """Runs the client with stdout or stderr (tty_stream) on a pseudo-terminal: (rc, what the
    terminal got, the other stream)."""
    master, slave = pty.openpty()
    env = base_env({"TRIEKV_URL": server.url})
    streams = {"stdout": slave, "stderr": subprocess.PIPE} if tty_stream == "stdout" else \
        {"stdout": subprocess.PIPE, "stderr": slave}
    p = subprocess.Popen([CLI_BIN] + args, env=env, **streams)
    os.close(slave)
    got = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the terminal closes or the time is up
        r, _, _ = select.select([master], [], [], 0.5)
        if not r:
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the client exited and the terminal closed
            break
        if not chunk:
            break
        got += chunk
    os.close(master)
    other = p.communicate(timeout=30)[0 if tty_stream == "stderr" else 1]
    return p.returncode, got, other


def test_watch_stats_on_a_tty_redraws_in_place(server):
    rc, out, err = run_on_a_tty(["watch-stats", "--count", "2", "--interval", "0.1"], server, "stdout")
    assert rc == 0, err
    assert out.count(b"\033[H\033[2J") == 2, out[:200]
    assert out.count(b"triekv main at") == 2


def test_watch_stats_stops_on_ctrl_c(server):
    env = base_env({"TRIEKV_URL": server.url})
    p = subprocess.Popen([CLI_BIN, "watch-stats", "--interval", "0.1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    time.sleep(0.6)
    assert p.poll() is None, "watch-stats ended by itself"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert out.count(b"refresh ") >= 2


# ---- bench ---------------------------------------------------------------------------------------------

def check_latencies(lat):
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], lat
    assert lat["mean"] <= lat["max"], lat


def test_bench_json(cli, server):
    res = cli("bench", "--ops", "2000", "--clients", "4", "--json")
    assert res.rc == 0, res
    doc = res.json()
    assert doc["ops"] == 2000 and doc["clients"] == 4 and doc["mix"] == {"get": 95, "set": 5, "delete": 0}
    assert set(doc["by_op"]) == {"get", "set"}
    assert sum(o["count"] for o in doc["by_op"].values()) == 2000
    assert doc["by_op"]["get"]["not_found"] == 0, "reads of a preloaded key space find their keys"
    assert doc["by_op"]["get"]["count"] > doc["by_op"]["set"]["count"]
    check_latencies(doc["latency_us"])
    for o in doc["by_op"].values():
        check_latencies(o["latency_us"])
    assert doc["seconds"] > 0 and doc["ops_per_second"] > 0
    assert server.kv_get("bench:00000000") is not None, "the key space was written first"


def test_bench_mix_value_size_keys_seed(cli, server):
    args = ["bench", "--ops", "600", "--clients", "3", "--mix", "get:2,set:1,delete:1", "--keys", "50",
            "--value-size", "7", "--json"]
    a = cli(*args, "--seed", "5").json()
    b = cli(*args, "--seed", "5").json()
    c = cli(*args, "--seed", "6").json()
    assert set(a["by_op"]) == {"get", "set", "delete"}
    assert sum(o["count"] for o in a["by_op"].values()) == 600
    assert a["keys"] == 50 and a["value_size"] == 7
    counts = lambda d: {k: v["count"] for k, v in d["by_op"].items()}
    assert counts(a) == counts(b), "the same seed gives the same operations"
    assert counts(a) != counts(c), "another seed gives others"
    assert a["by_op"]["delete"]["not_found"] > 0, "deletes of 50 keys find some already gone"
    sizes = {len(server.kv_get("bench:%08d" % i) or b"1234567") for i in range(50)}
    assert sizes == {7}, sizes


def test_bench_human_output(cli):
    res = cli("bench", "--ops", "300", "--clients", "2")
    assert res.rc == 0
    lines = res.text.splitlines()
    assert lines[0].startswith("bench: 300 ops in ") and "with 2 clients" in lines[0]
    assert lines[1].split()[:2] == ["op", "count"] and "p99" in lines[1]
    assert [l.split()[0] for l in lines[2:]] == ["get", "set", "all"]
    assert res.err == "", "no progress bar into a pipe"


def test_bench_progress_bar_on_a_tty(server):
    rc, err, out = run_on_a_tty(["bench", "--ops", "3000", "--clients", "2", "--mix", "set:1"], server, "stderr")
    assert rc == 0
    assert re.search(rb"\r\[[#.]{30}\] +\d+% \d+/3000 ops", err), err[:300]
    assert out.startswith(b"bench: 3,000 ops")


# ---- the server's address, unreachable servers, replicas ---------------------------------------------

def closed_port_url():
    return "http://127.0.0.1:%d" % free_port()


@pytest.mark.parametrize("args", [["get", "k"], ["get", "a,b"], ["set", "k=v"], ["delete", "k"], ["range"],
                                  ["stats"], ["watch-stats", "--count", "2", "--interval", "0.1"],
                                  ["bench", "--ops", "10"]])
def test_unreachable_server_exit_3(cli, args):
    url = closed_port_url()
    res = cli("--server", url, *args)
    assert res.rc == 3, res
    one_line_error(res, "cannot reach the server at %s" % url, "TRIEKV_URL")
    assert res.out == b""


def test_server_that_does_not_answer_times_out(cli):
    """--timeout bounds a request to a server that accepts and then says nothing."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    url = "http://127.0.0.1:%d" % lsock.getsockname()[1]
    try:
        res = cli("--timeout", "0.5", "stats", url=url)
        assert res.rc == 3, res
        one_line_error(res, "did not answer within 0.5 s", url)
        assert res.seconds < 10
    finally:
        lsock.close()


def test_server_that_dies_mid_watch(server, workdir):
    """watch-stats keeps going (and says so) when the server goes away after the first refresh."""
    node = Node(workdir, "dying")
    env = base_env({"TRIEKV_URL": node.url})
    p = subprocess.Popen([CLI_BIN, "watch-stats", "--interval", "0.2", "--count", "6"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    time.sleep(0.5)
    node.stop()
    assert not sanitizer_findings(node.log())
    out, err = p.communicate(timeout=30)
    assert p.returncode == 3, err
    assert b"triekv main at" in out and b"cannot reach the server at %s" % node.url.encode() in out
    assert b"(retrying)" in out


def test_writes_to_a_replica_name_the_main(cli, replica, server):
    for args in (["set", "rep:a=1"], ["delete", "rep:a"], ["set", "--kv", "rep:b", "2"]):
        res = cli(*args, url=replica.url)
        assert res.rc == 3, res
        line = one_line_error(res, "read-only replica", "send writes to the main at %s" % server.url)
        assert replica.url in line
    assert replica.kv_get("rep:a") is None
    # reads work on a replica
    res = cli("get", "rep:a", url=replica.url)
    assert res.rc == 1 and "not found" in res.err
    assert cli("range", url=replica.url).rc == 0


def test_bench_against_a_replica_stops_on_the_first_refusal(cli, replica, server):
    res = cli("bench", "--ops", "100", "--mix", "set:1", url=replica.url)
    assert res.rc == 3, res
    one_line_error(res, "send writes to the main at %s" % server.url)


def test_server_url_from_env_flag_and_default(cli, server):
    server.put_many({b"env:k": b"from env"})
    # TRIEKV_URL
    assert cli("get", "env:k").out == b"from env"
    # --server wins over TRIEKV_URL, before or after the command, with or without http://
    bad = closed_port_url()
    host_port = server.url[len("http://"):]
    assert cli("get", "env:k", "--server", server.url, url=bad).out == b"from env"
    assert cli("--server", host_port + "/", "get", "env:k", url=bad).out == b"from env"
    assert cli("get", "env:k", url=bad).rc == 3
    # a bad TRIEKV_URL is reported only when it is used
    res = cli("get", "env:k", env={"TRIEKV_URL": "ftp://nowhere"})
    assert res.rc == 2 and "TRIEKV_URL=ftp://nowhere" in res.err, res
    assert cli("get", "env:k", "--server", server.url, env={"TRIEKV_URL": "ftp://nowhere"}).rc == 0
    # unset: http://127.0.0.1:3030
    e = {k: v for k, v in base_env().items() if k != "TRIEKV_URL"}
    p = subprocess.run([CLI_BIN, "--timeout", "1", "stats", "--json"], capture_output=True, env=e, timeout=30)
    if p.returncode == 3:
        assert b"http://127.0.0.1:3030" in p.stderr, p.stderr
    else:
        assert p.returncode == 0 and "keys" in json.loads(p.stdout)  # someone runs a server there


def json_answer(status, obj):
    return status, "application/json", json.dumps(obj).encode()


@pytest.mark.parametrize("answer,args,rc,needles", [
    (json_answer(500, {"error": "io_error", "message": "disk on fire"}), ["stats"], 3,
     ["failed (HTTP 500 io_error): disk on fire"]),
    (json_answer(503, {"error": "read_only", "message": "bulk write: store is read-only"}), ["set", "a=1"], 3,
     ["stopped taking writes", "restart the node"]),
    (json_answer(503, {"error": "closed", "message": "shutting down"}), ["get", "a"], 3, ["HTTP 503 closed"]),
    (json_answer(403, {"error": "read_only_replica", "message": "this node is a read-only replica; send writes "
                                                                 "to its main"}), ["set", "a=1"], 3,
     ["read-only replica and does not know its main"]),
    (json_answer(412, {"error": "precondition_failed", "message": "version"}), ["set", "a=1"], 1,
     ["precondition failed"]),
    ((200, "text/plain", b"hello"), ["stats"], 3, ["not a JSON object"]),
    ((200, "application/json", b'{"items": 5}'), ["get", "a,b"], 3, ["malformed"]),
    ((200, "application/json", b'{"seq": "x"}'), ["set", "a=1"], 3, ["no seq"]),
    ((200, "application/json", b'{"items": []}'), ["range"], 3, ["not a range page"]),
    ((404, "text/html", b"<h1>nope</h1>"), ["get", "a,b"], 3, ["unexpected answer", "HTTP 404", "triekv server"]),
    ((418, "text/plain", b"teapot"), ["delete", "a"], 3, ["unexpected answer", "HTTP 418"]),
])
def test_answers_map_to_exit_statuses(answer, args, rc, needles):
    with FakeServer(lambda m, p, b: answer) as fake:
        res = run_cli(args, url=fake.url)
    assert res.rc == rc, res
    one_line_error(res, *needles)


def range_pages(pages):
    """A fake /bulk/range: pages[i] = (keys, next); the cursor is the page's index."""
    def answer(method, path, body):
        q = dict(p.split("=", 1) for p in path.split("?", 1)[1].split("&"))
        keys, nxt = pages[int(q.get("cursor", "0"))]
        return json_answer(200, {"items": [{"key": b64(k), "value": b64("v")} for k in keys], "next": nxt})
    return answer


@pytest.mark.parametrize("pages,needle", [
    ([(["a", "c", "b"], None)], "out of order"),
    ([(["a", "b"], "1"), (["b", "c"], None)], "out of order"),  # a page repeats a key
    ([(["a"], "1"), ([], "2"), (["c"], None)], "empty range page"),
])
def test_range_checks_the_servers_order(pages, needle):
    with FakeServer(range_pages(pages)) as fake:
        res = run_cli(["range"], url=fake.url)
    assert res.rc == 3, res
    one_line_error(res, needle)
    assert res.text.startswith("a\tv\n"), "items before the fault are printed"
    with FakeServer(range_pages([(["a", "b"], "1"), (["c"], "2"), (["d"], None)])) as fake:
        res = run_cli(["range"], url=fake.url)
        assert res.rc == 0 and res.text == "a\tv\nb\tv\nc\tv\nd\tv\n"
        assert [p for _, p in fake.requests] == ["/bulk/range?encoding=base64", "/bulk/range?encoding=base64&cursor=1",
                                                 "/bulk/range?encoding=base64&cursor=2"]


def test_range_json_cut_by_a_failure_is_not_a_document(cli):
    """A page failing after others: the JSON printed so far stays unterminated, so no parser takes a
    part of the range for all of it; without any page nothing is printed."""
    def answer(method, path, body):
        if "cursor=" in path:
            return json_answer(500, {"error": "io_error", "message": "gone"})
        return json_answer(200, {"items": [{"key": b64("a"), "value": b64("v")}], "next": "1"})
    with FakeServer(answer) as fake:
        res = run_cli(["range", "--json"], url=fake.url)
    assert res.rc == 3, res
    assert res.text.startswith('{"items":[\n{"key":"a","value":"v"}')
    with pytest.raises(ValueError):
        json.loads(res.out)
    res = cli("range", "--json", "--server", closed_port_url())
    assert res.rc == 3 and res.out == b""


def test_output_that_cannot_be_written_is_an_error(cli, server):
    server.put_many({b"out:k": b"v" * 100000})
    with open("/dev/full", "wb") as f:
        for args in (["get", "out:k"], ["stats"], ["range", "--prefix", "out:"]):
            res = cli(*args, stdout=f)
            assert res.rc == 3, res
            one_line_error(res, "cannot write the output")


def test_range_stops_when_stdout_closes(server):
    """`range | head` ends the client at once (SIGPIPE, as cat does), not after every page."""
    server.put_many({("sp:%04d" % i).encode(): b"v" * 20000 for i in range(300)})  # 6 MB of output
    env = base_env({"TRIEKV_URL": server.url})
    p = subprocess.Popen([CLI_BIN, "range", "--prefix", "sp:"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env)
    first = p.stdout.readline()
    p.stdout.close()
    p.wait(timeout=30)
    assert first == b"sp:0000\t" + b"v" * 20000 + b"\n"
    assert p.returncode == -signal.SIGPIPE, (p.returncode, p.stderr.read())
