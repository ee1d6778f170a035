/* cli/cli_out.c - what triekv-cli writes: checked writes to stdout, the one-line escaping of bytes,
 * JSON members that carry any bytes, and the human number formats (1,234 / 1.5 MiB / 1h2m3s).
 *
 * Owns the record of the first failed write to stdout, reported once by cli_out_finish() so a full
 * disk or a closed pipe is an exit status, not silence. Threads: main thread only (bench workers
 * never print). */
#include "cli/cli_int.h"
#include "common/kv_codec.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

static int out_errno; /* the first failed write to stdout, 0 while none */

void cli_out(const void *p, size_t len)
{
    if (len == 0 || out_errno != 0)
        return;
    errno = 0;
    if (fwrite(p, 1, len, stdout) != len)
        out_errno = errno ? errno : EIO;
}

void cli_out_str(const char *s)
{
    cli_out(s, strlen(s));
}

void cli_outf(const char *fmt, ...)
{
    if (out_errno != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    errno = 0;
    if (vfprintf(stdout, fmt, ap) < 0)
        out_errno = errno ? errno : EIO;
    va_end(ap);
}

void cli_out_flush(void)
{
    errno = 0;
    if (fflush(stdout) != 0 && out_errno == 0)
        out_errno = errno ? errno : EIO;
}

int cli_out_finish(void)
{
    cli_out_flush();
    if (out_errno != 0)
        return cli_fail(CLI_SERVER, "cannot write the output: %s", strerror(out_errno));
    return CLI_OK;
}

/* ---- bytes as text ------------------------------------------------------------------------------ */

/* Length of the UTF-8 sequence at p that is valid and not a C1 control character, else 0. */
static size_t utf8_char(const uint8_t *p, size_t len)
{
    size_t n = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc0 ? 2 : 1;
    if (n > len || !kv_utf8_valid(p, n))
        return 0;
    if (n == 2 && p[0] == 0xc2 && p[1] < 0xa0) /* U+0080..U+009F: terminals act on some */
        return 0;
    return n;
}

void cli_escape(struct kv_buf *out, const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t ch = p[i];
        size_t n = ch >= 0x80 ? utf8_char(p + i, len - i) : 1;
        if (ch == '\\')
            kv_buf_append(out, "\\\\", 2);
        else if (ch == '\t')
            kv_buf_append(out, "\\t", 2);
        else if (ch == '\n')
            kv_buf_append(out, "\\n", 2);
        else if (ch == '\r')
            kv_buf_append(out, "\\r", 2);
        else if (ch < 0x20 || ch == 0x7f || n == 0)
            kv_buf_printf(out, "\\x%02x", ch);
        else
            kv_buf_append(out, p + i, n);
        i += n ? n : 1;
    }
}

bool cli_printable(const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (p[i] < 0x20 || p[i] == 0x7f)
            return false;
        size_t n = p[i] >= 0x80 ? utf8_char(p + i, len - i) : 1;
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

void cli_b64(struct kv_buf *out, const uint8_t *p, size_t len)
{
    kv_base64_encode(p, len, out);
}

void cli_json_member(struct kv_buf *out, const char *name, const uint8_t *p, size_t len, bool force_b64)
{
    if (!force_b64 && kv_utf8_valid(p, len)) {
        kv_buf_printf(out, "\"%s\":", name);
        kv_json_append_string(out, p, len);
        return;
    }
    kv_buf_printf(out, "\"%s_base64\":\"", name);
    kv_base64_encode(p, len, out);
    kv_buf_append_byte(out, '"');
}

int cli_json_b64(const json_t *obj, const char *name, struct kv_buf *out)
{
    const json_t *s = json_object_get(obj, name);
    out->len = 0;
    if (!json_is_string(s))
        return -1;
    return kv_base64_decode(json_string_value(s), json_string_length(s), out) == 0 ? 0 : -1;
}

/* ---- numbers for people ------------------------------------------------------------------------- */

const char *cli_fmt_count(char *buf, size_t len, uint64_t v)
{
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%" PRIu64, v);
    size_t o = 0;
    for (int i = 0; i < n && o + 2 < len; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = 0;
    return buf;
}

const char *cli_fmt_bytes(char *buf, size_t len, uint64_t v)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
    if (v < 1024) {
        snprintf(buf, len, "%" PRIu64 " B", v);
        return buf;
    }
    double d = (double)v / 1024.0;
    size_t u = 0;
    while (d >= 1024.0 && u + 1 < sizeof units / sizeof units[0]) {
        d /= 1024.0;
        u++;
    }
    snprintf(buf, len, "%.1f %s", d, units[u]);
    return buf;
}

const char *cli_fmt_duration(char *buf, size_t len, double seconds)
{
    if (!(seconds >= 0)) /* NaN too */
        seconds = 0;
    if (seconds > 0 && seconds < 1.0) {
        snprintf(buf, len, "%.0fms", seconds * 1000.0);
        return buf;
    }
    uint64_t s = (uint64_t)seconds, d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60;
    if (d > 0)
        snprintf(buf, len, "%" PRIu64 "d%" PRIu64 "h%" PRIu64 "m%" PRIu64 "s", d, h, m, s % 60);
    else if (h > 0)
        snprintf(buf, len, "%" PRIu64 "h%" PRIu64 "m%" PRIu64 "s", h, m, s % 60);
    else if (m > 0)
        snprintf(buf, len, "%" PRIu64 "m%" PRIu64 "s", m, s % 60);
    else
        snprintf(buf, len, "%" PRIu64 "s", s);
    return buf;
}

const char *cli_fmt_rate(char *buf, size_t len, double per_second)
{
    if (!(per_second >= 0))
        per_second = 0;
    uint64_t tenths = (uint64_t)(per_second * 10.0 + 0.5);
    char whole[32];
    cli_fmt_count(whole, sizeof whole, tenths / 10);
    snprintf(buf, len, "%s.%u/s", whole, (unsigned)(tenths % 10));
    return buf;
}
