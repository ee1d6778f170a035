/* tests/unit/common/test_codec.c - the small common/ pieces every module leans on:
 *   - kv_name_escape/unescape (partition file names): round trip of every 1- and 2-byte prefix and
 *     of random ones, the [a-z0-9_] alphabet and 3x bound, "_root", no two names equal when case
 *     is ignored, and rejection of every non-canonical or malformed name;
 *   - kv_percent_decode/encode, kv_base64_encode/decode (RFC 4648 vectors, strictness),
 *     kv_utf8_valid (checked exhaustively against a reference up to 3 bytes), kv_json_append_string;
 *   - kv_crc32c (check value, iSCSI vectors, chaining, a bitwise reference);
 *   - kv_buf and the little-endian field helpers, kv_slice_cmp ordering;
 *   - kv_strerror/kv_errname over errno values, every KV_E_* code and 0. */
#include "tests/unit/harness.h"
#include "common/kv_buf.h"
#include "common/kv_codec.h"
#include "common/kv_crc.h"
#include "common/kv_err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool buf_is(const struct kv_buf *b, const void *p, size_t n)
{
    return b->len == n && (n == 0 || memcmp(b->ptr, p, n) == 0);
}

static bool buf_is_str(const struct kv_buf *b, const char *s)
{
    return buf_is(b, s, strlen(s));
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)harness_rand();
}

/* ---- partition file names --------------------------------------------------------------------- */

static bool name_char_ok(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

/* Escapes p, checks the alphabet and the length bound, unescapes and compares. */
static bool name_round_trip(const uint8_t *p, size_t n)
{
    struct kv_buf name = {0}, back = {0};
    kv_name_escape(p, n, &name);
    bool ok = name.len > 0;
    if (n > 0 && name.len > 3 * n)
        ok = false;
    for (size_t i = 0; i < name.len; i++)
        if (!name_char_ok(name.ptr[i]))
            ok = false;
    int rc = kv_name_unescape((const char *)name.ptr, name.len, &back);
    if (rc != KV_OK || !buf_is(&back, p, n))
        ok = false;
    kv_buf_free(&name);
    kv_buf_free(&back);
    return ok;
}

static void test_name_single_bytes(void)
{
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        CHECK(name_round_trip(&c, 1));
        struct kv_buf name = {0};
        kv_name_escape(&c, 1, &name);
        bool plain = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (plain) {
            CHECK(buf_is(&name, &c, 1)); /* kept as is */
        } else {
            char want[4];
            snprintf(want, sizeof want, "_%02x", c);
            CHECK(buf_is_str(&name, want));
        }
        kv_buf_free(&name);
    }
}

static void test_name_byte_pairs(void)
{
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        uint8_t p[2] = {(uint8_t)(i >> 8), (uint8_t)i};
        if (!name_round_trip(p, 2) && bad++ < 5)
            printf("    pair %02x %02x does not round-trip\n", p[0], p[1]);
    }
    CHECK(bad == 0);
}

static void test_name_random(void)
{
    uint8_t p[64];
    int bad = 0;
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = (size_t)harness_below(65);
        /* half of the prefixes from a small alphabet mixing plain and escaped bytes */
        if (iter & 1) {
            static const uint8_t alpha[] = {'a', 'z', '0', '9', '_', 'A', 'Z', 0, 0xff, '/', '.'};
            for (size_t i = 0; i < n; i++)
                p[i] = alpha[harness_below(sizeof alpha)];
        } else {
            fill_random(p, n);
        }
        if (!name_round_trip(p, n))
            bad++;
    }
    CHECK(bad == 0);
    /* the bound is reached: a prefix of bytes that all need escaping */
    memset(p, 0xff, sizeof p);
    struct kv_buf name = {0};
    kv_name_escape(p, sizeof p, &name);
    CHECK(name.len == 3 * sizeof p);
    kv_buf_free(&name);
}

static size_t escaped_len(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ? 1 : 3;
}

/* Every cut of a name: at an escape boundary it decodes to the matching prefix of the input,
 * inside an escape it is rejected (bytes past the cut are valid hex and must not be read). */
static void test_name_cuts(void)
{
    int bad = 0;
    for (int iter = 0; iter < 500; iter++) {
        uint8_t p[32];
        size_t n = 1 + (size_t)harness_below(sizeof p);
        for (size_t i = 0; i < n; i++)
            p[i] = harness_below(2) ? (uint8_t)('a' + harness_below(26)) : (uint8_t)harness_rand();
        struct kv_buf name = {0}, back = {0};
        kv_name_escape(p, n, &name);
        size_t consumed = 0, in = 0; /* name bytes of the first `in` input bytes */
        for (size_t k = 1; k <= name.len; k++) {
            while (in < n && consumed + escaped_len(p[in]) <= k)
                consumed += escaped_len(p[in++]);
            back.len = 0;
            int rc = kv_name_unescape((const char *)name.ptr, k, &back);
            if (k == consumed)
                bad += rc != KV_OK || !buf_is(&back, p, in);
            else
                bad += rc != KV_E_INVALID;
        }
        kv_buf_free(&name);
        kv_buf_free(&back);
    }
    CHECK(bad == 0);
}

static void test_name_root(void)
{
    struct kv_buf name = {0}, back = {0};
    kv_name_escape((const uint8_t *)"", 0, &name);
    CHECK(buf_is_str(&name, "_root"));
    CHECK(buf_is_str(&name, KV_NAME_ROOT));
    CHECK_OK(kv_name_unescape("_root", 5, &back));
    CHECK(back.len == 0);
    /* appends: existing contents stay */
    kv_buf_append_str(&back, "xy");
    CHECK_OK(kv_name_unescape("ab_2f", 5, &back));
    CHECK(buf_is_str(&back, "xyab/"));
    /* the bytes "root" and "_root" as prefixes get other names */
    kv_buf_free(&name);
    kv_name_escape((const uint8_t *)"_root", 5, &name);
    CHECK(buf_is_str(&name, "_5froot"));
    kv_buf_free(&name);
    kv_name_escape((const uint8_t *)"root", 4, &name);
    CHECK(buf_is_str(&name, "root"));
    kv_buf_free(&name);
    kv_buf_free(&back);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Every 1- and 2-byte prefix gets a name no other one shares even when letter case is ignored
 * (case-insensitive file systems). The names are lowercased, sorted, and neighbours compared. */
static void test_name_case_insensitive_unique(void)
{
    enum { N = 256 + 65536, W = 8 };
    char(*names)[W] = calloc(N, W);
    size_t k = 0;
    struct kv_buf b = {0};
    for (int len = 1; len <= 2; len++) {
        for (int i = 0; i < (len == 1 ? 256 : 65536); i++) {
            uint8_t p[2] = {(uint8_t)(len == 1 ? i : i >> 8), (uint8_t)i};
            b.len = 0;
            kv_name_escape(p, (size_t)len, &b);
            if (b.len >= W) {
                CHECK(b.len < W);
                continue;
            }
            for (size_t j = 0; j < b.len; j++) {
                uint8_t c = b.ptr[j];
                names[k][j] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
            }
            names[k][b.len] = 0;
            k++;
        }
    }
    kv_buf_free(&b);
    CHECK(k == N);
    qsort(names, k, W, name_cmp);
    size_t dups = 0;
    for (size_t i = 1; i < k; i++)
        if (strcmp(names[i - 1], names[i]) == 0 && dups++ < 5)
            printf("    two prefixes share the name %s\n", names[i]);
    CHECK(dups == 0);
    /* "_root" is not among them either */
    CHECK(bsearch("_root", names, k, W, name_cmp) == NULL);
    free(names);
}

static void test_name_reject(void)
{
    static const char *const bad[] = {
        "",      /* empty: the root is "_root" */
        "_4A",   /* uppercase hex */
        "_Ff",   /* uppercase hex */
        "_61",   /* 'a' needs no escape */
        "_30",   /* '0' needs no escape */
        "_7a",   /* 'z' needs no escape */
        "_6",    /* truncated */
        "_",     /* truncated */
        "ab_",   /* truncated at the end */
        "ab_2",  /* truncated at the end */
        "_zz",   /* not hex */
        "_g0",   /* not hex */
        "A",     /* uppercase letter */
        "abC",   /* uppercase letter */
        "a-b",   /* outside the alphabet */
        "a.b",   /* outside the alphabet */
        "a b",   /* outside the alphabet */
        "_Root", /* not the root name */
        "_root_", "_rootx", "x_root", "_roo",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct kv_buf out = {0};
        kv_buf_append_str(&out, "keep");
        int rc = kv_name_unescape(bad[i], strlen(bad[i]), &out);
        if (rc != KV_E_INVALID)
            printf("    unescape(\"%s\") returned %d\n", bad[i], rc);
        CHECK_RC(rc, KV_E_INVALID);
        CHECK(buf_is_str(&out, "keep")); /* nothing appended on failure */
        kv_buf_free(&out);
    }
    /* lengths that end inside an escape, with valid-looking bytes past len (never read) */
    static const struct {
        const char *s;
        size_t len;
    } cut[] = {{"_4a", 2}, {"_4a", 1}, {"ab_2f", 4}, {"ab_2f", 3}, {"x_ff_00", 6}};
    for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
        struct kv_buf o = {0};
        CHECK_RC(kv_name_unescape(cut[i].s, cut[i].len, &o), KV_E_INVALID);
        kv_buf_free(&o);
    }
    /* a NUL inside the name is outside the alphabet too */
    struct kv_buf out = {0};
    CHECK_RC(kv_name_unescape("a\0b", 3, &out), KV_E_INVALID);
    /* every escape of a byte that is plain is rejected, every other lowercase escape accepted */
    for (int c = 0; c < 256; c++) {
        char s[4];
        snprintf(s, sizeof s, "_%02x", c);
        out.len = 0;
        bool plain = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        CHECK_RC(kv_name_unescape(s, 3, &out), plain ? KV_E_INVALID : KV_OK);
        bool hex_letter = (c >> 4) >= 10 || (c & 15) >= 10;
        snprintf(s, sizeof s, "_%02X", c);
        out.len = 0;
        if (hex_letter) /* an uppercase spelling exists: never canonical */
            CHECK_RC(kv_name_unescape(s, 3, &out), KV_E_INVALID);
    }
    kv_buf_free(&out);
}

/* ---- percent-encoding ------------------------------------------------------------------------- */

static void test_percent_decode(void)
{
    struct kv_buf out = {0};
    CHECK_OK(kv_percent_decode("a+b%20c%2Bd%2be", 15, true, &out));
    CHECK(buf_is_str(&out, "a b c+d+e"));
    out.len = 0;
    CHECK_OK(kv_percent_decode("a+b%20c%2Bd", 11, false, &out));
    CHECK(buf_is_str(&out, "a+b c+d"));
    out.len = 0;
    CHECK_OK(kv_percent_decode("", 0, true, &out));
    CHECK(out.len == 0);
    CHECK_OK(kv_percent_decode("%00%ff%FF%7e", 12, false, &out));
    CHECK(buf_is(&out, "\x00\xff\xff~", 4));
    out.len = 0;
    CHECK_OK(kv_percent_decode("%41", 3, false, &out)); /* an escape right at the end */
    CHECK(buf_is_str(&out, "A"));
    /* an escape cut by len, with hex digits past it (never read) */
    CHECK_RC(kv_percent_decode("%41", 2, false, &out), KV_E_INVALID);
    CHECK_RC(kv_percent_decode("%41", 1, false, &out), KV_E_INVALID);
    CHECK_RC(kv_percent_decode("ab%41", 4, true, &out), KV_E_INVALID);
    CHECK(buf_is_str(&out, "A"));

    static const char *const bad[] = {"%", "%4", "%G1", "%4G", "a%", "a%4", "%%41", "ab%zz", "%-1", "% 1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (int plus = 0; plus < 2; plus++) {
            out.len = 0;
            kv_buf_append_str(&out, "keep");
            CHECK_RC(kv_percent_decode(bad[i], strlen(bad[i]), plus, &out), KV_E_INVALID);
            CHECK(buf_is_str(&out, "keep"));
        }
    }
    kv_buf_free(&out);
}

static void test_percent_round_trip(void)
{
    struct kv_buf enc = {0}, dec = {0};
    for (int c = 0; c < 256; c++) {
        uint8_t b = (uint8_t)c;
        enc.len = 0;
        kv_percent_encode(&b, 1, &enc);
        bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                          c == '-' || c == '.' || c == '_' || c == '~';
        if (unreserved) {
            CHECK(buf_is(&enc, &b, 1));
        } else {
            char want[4];
            snprintf(want, sizeof want, "%%%02X", c);
            CHECK(buf_is_str(&enc, want));
        }
        for (int plus = 0; plus < 2; plus++) {
            dec.len = 0;
            CHECK_OK(kv_percent_decode((const char *)enc.ptr, enc.len, plus, &dec));
            CHECK(buf_is(&dec, &b, 1));
        }
    }
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    enc.len = 0;
    kv_percent_encode(all, sizeof all, &enc);
    for (int plus = 0; plus < 2; plus++) {
        dec.len = 0;
        CHECK_OK(kv_percent_decode((const char *)enc.ptr, enc.len, plus, &dec));
        CHECK(buf_is(&dec, all, sizeof all));
    }
    kv_buf_free(&enc);
    kv_buf_free(&dec);
}

/* ---- base64 ------------------------------------------------------------------------------------ */

static void test_base64_vectors(void)
{
    static const char *const vec[][2] = {{"", ""},
                                         {"f", "Zg=="},
                                         {"fo", "Zm8="},
                                         {"foo", "Zm9v"},
                                         {"foob", "Zm9vYg=="},
                                         {"fooba", "Zm9vYmE="},
                                         {"foobar", "Zm9vYmFy"}};
    struct kv_buf enc = {0}, dec = {0};
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        size_t n = strlen(vec[i][0]);
        enc.len = 0;
        kv_base64_encode((const uint8_t *)vec[i][0], n, &enc);
        CHECK(buf_is_str(&enc, vec[i][1]));
        CHECK(kv_base64_encoded_len(n) == strlen(vec[i][1]));
        dec.len = 0;
        CHECK_OK(kv_base64_decode(vec[i][1], strlen(vec[i][1]), &dec));
        CHECK(buf_is_str(&dec, vec[i][0]));
    }
    /* both extra characters of the alphabet */
    enc.len = 0;
    kv_base64_encode((const uint8_t *)"\xfb\xff\xbf", 3, &enc);
    CHECK(buf_is_str(&enc, "+/+/"));
    /* appends to what is there */
    enc.len = 0;
    kv_buf_append_str(&enc, "x:");
    kv_base64_encode((const uint8_t *)"foob", 4, &enc);
    CHECK(buf_is_str(&enc, "x:Zm9vYg=="));
    kv_buf_free(&enc);
    kv_buf_free(&dec);
}

static void test_base64_random(void)
{
    uint8_t p[300];
    struct kv_buf enc = {0}, dec = {0};
    int bad = 0;
    for (size_t n = 0; n <= sizeof p; n++) {
        for (int rep = 0; rep < 4; rep++) {
            fill_random(p, n);
            enc.len = 0;
            dec.len = 0;
            kv_base64_encode(p, n, &enc);
            if (enc.len != kv_base64_encoded_len(n) || enc.len % 4 != 0)
                bad++;
            if (kv_base64_decode((const char *)enc.ptr, enc.len, &dec) != KV_OK || !buf_is(&dec, p, n))
                bad++;
        }
    }
    CHECK(bad == 0);
    kv_buf_free(&enc);
    kv_buf_free(&dec);
}

static void test_base64_reject(void)
{
    static const char *const bad[] = {
        "Z",        "Zg",       "Zg=",      "Zm9vY",    "Zm9vYg=",  /* length not a multiple of 4 */
        "Zh==",     "Zm9=",     "Zm9vYh==", "Zm9vYmF=", "Zm9vYr==", /* non-zero unused bits */
        "Z===",     "====",     "=Zg=",     "Zg=a",     "Z=g=",     /* '=' in the wrong place */
        "Zg==Zg==", "Zm8=Zm9v", "Zg=A",     "Zm9vZg=A",             /* '=' before the end */
        "Zm9v\n",   " Zm9",     "Zm 9v",    "Zm9v\r\n", "Zm\t9",    /* whitespace */
        "Zm9-",     "Zm9_",     "Zm9.",     "Zm9*",     "Zm\x80v",  /* not in the alphabet */
    };
    struct kv_buf out = {0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        out.len = 0;
        kv_buf_append_str(&out, "keep");
        int rc = kv_base64_decode(bad[i], strlen(bad[i]), &out);
        if (rc != KV_E_INVALID)
            printf("    decode(\"%s\") returned %d\n", bad[i], rc);
        CHECK_RC(rc, KV_E_INVALID);
        CHECK(buf_is_str(&out, "keep"));
    }
    CHECK_RC(kv_base64_decode("Zg\0=", 4, &out), KV_E_INVALID);
    /* every length that is not a multiple of 4, cut out of valid input (bytes past len unread) */
    const char *full = "Zm9vYmFyZm9vYmFy";
    for (size_t n = 1; n < strlen(full); n++) {
        if (n % 4 == 0)
            continue;
        out.len = 0;
        CHECK_RC(kv_base64_decode(full, n, &out), KV_E_INVALID);
        CHECK(out.len == 0);
    }
    /* the canonical forms next to them decode */
    out.len = 0;
    CHECK_OK(kv_base64_decode("Zg==", 4, &out));
    CHECK(buf_is_str(&out, "f"));
    out.len = 0;
    CHECK_OK(kv_base64_decode("Zm8=", 4, &out));
    CHECK(buf_is_str(&out, "fo"));
    /* exhaustively: of the 64 last characters of "Z?==" only the 4 with zero low bits decode, and
     * of "Zm?=" the 16 */
    int ok2 = 0, ok1 = 0;
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; i++) {
        char s2[] = {'Z', alpha[i], '=', '='};
        char s1[] = {'Z', 'm', alpha[i], '='};
        out.len = 0;
        ok2 += kv_base64_decode(s2, 4, &out) == KV_OK;
        out.len = 0;
        ok1 += kv_base64_decode(s1, 4, &out) == KV_OK;
    }
    CHECK(ok2 == 4);
    CHECK(ok1 == 16);
    kv_buf_free(&out);
}

/* ---- UTF-8 ------------------------------------------------------------------------------------ */

/* Reference: the well-formed byte sequences of Unicode Table 3-7, written out range by range. */
static bool ref_utf8_valid(const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = p[i];
        size_t n;
        uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
        if (c <= 0x7f) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 2;
        } else if (c == 0xe0) {
            n = 3, lo = 0xa0;
        } else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) {
            n = 3;
        } else if (c == 0xed) {
            n = 3, hi = 0x9f;
        } else if (c == 0xf0) {
            n = 4, lo = 0x90;
        } else if (c >= 0xf1 && c <= 0xf3) {
            n = 4;
        } else if (c == 0xf4) {
            n = 4, hi = 0x8f;
        } else {
            return false;
        }
        if (len - i < n || p[i + 1] < lo || p[i + 1] > hi)
            return false;
        for (size_t j = 2; j < n; j++)
            if (p[i + j] < 0x80 || p[i + j] > 0xbf)
                return false;
        i += n;
    }
    return true;
}

static void test_utf8_samples(void)
{
    static const char *const good[] = {
        "",
        "plain ascii",
        "\x00",
        "\x7f",
        "\xc2\x80",         /* U+0080 */
        "\xc2\xa9",         /* (c) */
        "\xdf\xbf",         /* U+07FF */
        "\xe0\xa0\x80",     /* U+0800 */
        "\xe2\x82\xac",     /* euro sign */
        "\xed\x9f\xbf",     /* U+D7FF, just below the surrogates */
        "\xee\x80\x80",     /* U+E000, just above */
        "\xef\xbf\xbf",     /* U+FFFF */
        "\xf0\x90\x80\x80", /* U+10000 */
        "\xf0\x9f\x98\x80", /* an emoji */
        "\xf4\x8f\xbf\xbf", /* U+10FFFF */
        "a\xc3\xa9z\xe6\x97\xa5\xf0\x9f\x8e\x89!",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        size_t n = i == 2 ? 1 : strlen(good[i]);
        if (!kv_utf8_valid((const uint8_t *)good[i], n))
            printf("    good sample %zu rejected\n", i);
        CHECK(kv_utf8_valid((const uint8_t *)good[i], n));
    }
    static const char *const bad[] = {
        "\xc0\x80",         /* overlong NUL */
        "\xc1\xbf",         /* overlong */
        "\xe0\x80\x80",     /* overlong */
        "\xe0\x9f\xbf",     /* overlong U+07FF */
        "\xf0\x80\x80\x80", /* overlong */
        "\xf0\x8f\xbf\xbf", /* overlong U+FFFF */
        "\xed\xa0\x80",     /* U+D800 */
        "\xed\xbf\xbf",     /* U+DFFF */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xf5\x80\x80\x80", /* past U+10FFFF */
        "\xf7\xbf\xbf\xbf",
        "\xf8\x88\x80\x80\x80",
        "\xfc\x84\x80\x80\x80\x80",
        "\xfe",
        "\xff",
        "\xc2",             /* truncated */
        "\xe2\x82",         /* truncated */
        "\xf0\x9f\x98",     /* truncated */
        "a\xf0\x9f",        /* truncated at the end */
        "\x80",             /* stray continuation */
        "\xbf",             /* stray continuation */
        "a\x80z",           /* stray continuation */
        "\xc2\xa9\xa9",     /* one continuation too many */
        "\xc2\x41",         /* lead byte without continuation */
        "\xe2\x82\x41",     /* broken in the third byte */
        "\xf0\x9f\x98\xc0", /* broken in the fourth byte */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (kv_utf8_valid((const uint8_t *)bad[i], strlen(bad[i])))
            printf("    bad sample %zu accepted\n", i);
        CHECK(!kv_utf8_valid((const uint8_t *)bad[i], strlen(bad[i])));
    }
    /* the length is respected: a valid sequence cut short by len is invalid */
    CHECK(!kv_utf8_valid((const uint8_t *)"\xe2\x82\xac", 2));
    CHECK(kv_utf8_valid((const uint8_t *)"a\xe2\x82\xac", 1));
}

/* Every sequence of 1, 2 and 3 bytes, and random 4-byte ones, against the reference. */
static void test_utf8_exhaustive(void)
{
    long mismatches = 0;
    uint8_t p[4];
    for (uint32_t v = 0; v < (1u << 24); v++) {
        p[0] = (uint8_t)(v >> 16);
        p[1] = (uint8_t)(v >> 8);
        p[2] = (uint8_t)v;
        if (kv_utf8_valid(p, 3) != ref_utf8_valid(p, 3) && mismatches++ < 5)
            printf("    %02x %02x %02x: mismatch\n", p[0], p[1], p[2]);
        if (v < (1u << 16) && kv_utf8_valid(p + 1, 2) != ref_utf8_valid(p + 1, 2) && mismatches++ < 5)
            printf("    %02x %02x: mismatch\n", p[1], p[2]);
    }
    for (int i = 0; i < 200000; i++) {
        uint64_t r = harness_rand();
        p[0] = (uint8_t)(0xf0 + (r & 7)); /* a 4-byte lead (or F5..F7) */
        p[1] = (uint8_t)(r >> 8);
        p[2] = (uint8_t)(r >> 16);
        p[3] = (uint8_t)(r >> 24);
        if (r & (1ull << 40)) { /* mostly continuation bytes, so valid ones come up too */
            p[1] = (uint8_t)(0x80 | (p[1] & 0x3f));
            p[2] = (uint8_t)(0x80 | (p[2] & 0x3f));
            p[3] = (uint8_t)(0x80 | (p[3] & 0x3f));
        }
        if (kv_utf8_valid(p, 4) != ref_utf8_valid(p, 4) && mismatches++ < 5)
            printf("    %02x %02x %02x %02x: mismatch\n", p[0], p[1], p[2], p[3]);
    }
    CHECK(mismatches == 0);
}

/* ---- JSON strings ----------------------------------------------------------------------------- */

static void test_json_string(void)
{
    struct kv_buf out = {0};
    kv_json_append_string(&out, (const uint8_t *)"", 0);
    CHECK(buf_is_str(&out, "\"\""));
    out.len = 0;
    const char *in = "a\"b\\c\x01\n\r\t\x1f\x7f/\xc3\xa9\xf0\x9f\x98\x80";
    kv_json_append_string(&out, (const uint8_t *)in, strlen(in));
    CHECK(buf_is_str(&out, "\"a\\\"b\\\\c\\u0001\\n\\r\\t\\u001f\x7f/\xc3\xa9\xf0\x9f\x98\x80\""));
    /* appends; a NUL byte is escaped, not a terminator */
    out.len = 0;
    kv_buf_append_str(&out, "{\"k\":");
    kv_json_append_string(&out, (const uint8_t *)"x\0y", 3);
    CHECK(buf_is_str(&out, "{\"k\":\"x\\u0000y\""));
    /* every control character comes out as a two-character or a \u00XX escape */
    for (int c = 0; c < 0x20; c++) {
        uint8_t b = (uint8_t)c;
        out.len = 0;
        kv_json_append_string(&out, &b, 1);
        char want[16];
        if (c == '\n')
            snprintf(want, sizeof want, "\"\\n\"");
        else if (c == '\r')
            snprintf(want, sizeof want, "\"\\r\"");
        else if (c == '\t')
            snprintf(want, sizeof want, "\"\\t\"");
        else
            snprintf(want, sizeof want, "\"\\u%04x\"", c);
        CHECK(buf_is_str(&out, want));
    }
    /* a long string with escapes spread through it (the unescaped runs are copied in one piece) */
    struct kv_buf want = {0};
    uint8_t p[1000];
    kv_buf_append_byte(&want, '"');
    for (size_t i = 0; i < sizeof p; i++) {
        p[i] = i % 97 == 0 ? '"' : (uint8_t)('a' + i % 26);
        if (p[i] == '"')
            kv_buf_append_byte(&want, '\\');
        kv_buf_append_byte(&want, p[i]);
    }
    kv_buf_append_byte(&want, '"');
    out.len = 0;
    kv_json_append_string(&out, p, sizeof p);
    CHECK(buf_is(&out, want.ptr, want.len));
    kv_buf_free(&want);
    kv_buf_free(&out);
}

/* ---- CRC32C ----------------------------------------------------------------------------------- */

static uint32_t ref_crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1)));
    }
    return ~crc;
}

static void test_crc32c(void)
{
    CHECK(kv_crc32c(0, "123456789", 9) == 0xe3069283u);
    CHECK(ref_crc32c(0, (const uint8_t *)"123456789", 9) == 0xe3069283u);
    CHECK(kv_crc32c(0, "", 0) == 0);
    CHECK(kv_crc32c(0x12345678u, "", 0) == 0x12345678u);
    CHECK(kv_crc32c(0, NULL, 0) == 0);
    /* RFC 3720 (iSCSI) appendix B.4 */
    uint8_t v[32];
    memset(v, 0, sizeof v);
    CHECK(kv_crc32c(0, v, 32) == 0x8a9136aau);
    memset(v, 0xff, sizeof v);
    CHECK(kv_crc32c(0, v, 32) == 0x62a8ab43u);
    for (int i = 0; i < 32; i++)
        v[i] = (uint8_t)i;
    CHECK(kv_crc32c(0, v, 32) == 0x46dd794eu);
    for (int i = 0; i < 32; i++)
        v[i] = (uint8_t)(31 - i);
    CHECK(kv_crc32c(0, v, 32) == 0x113fdb5cu);

    /* chaining over every split point equals one call */
    uint8_t p[1500];
    fill_random(p, sizeof p);
    uint32_t whole = kv_crc32c(0, p, sizeof p);
    CHECK(whole == ref_crc32c(0, p, sizeof p));
    int bad = 0;
    for (size_t cut = 0; cut <= sizeof p; cut++)
        bad += kv_crc32c(kv_crc32c(0, p, cut), p + cut, sizeof p - cut) != whole;
    CHECK(bad == 0);
    /* three pieces at random points, random lengths and alignments against the reference */
    for (int i = 0; i < 500; i++) {
        size_t off = (size_t)harness_below(64);
        size_t n = (size_t)harness_below(sizeof p - off + 1);
        size_t a = (size_t)harness_below(n + 1), b = a + (size_t)harness_below(n - a + 1);
        uint32_t c = kv_crc32c(0, p + off, a);
        c = kv_crc32c(c, p + off + a, b - a);
        c = kv_crc32c(c, p + off + b, n - b);
        bad += c != ref_crc32c(0, p + off, n);
    }
    CHECK(bad == 0);
    /* a single flipped bit always changes it */
    for (size_t bit = 0; bit < 64 * 8; bit++) {
        p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        bad += kv_crc32c(0, p, sizeof p) == whole;
        p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    CHECK(bad == 0);
}

/* ---- kv_buf and field helpers ------------------------------------------------------------------ */

static void test_buf(void)
{
    struct kv_buf b = {0};
    CHECK(b.len == 0 && b.ptr == NULL);
    kv_buf_append(&b, "abc", 3);
    kv_buf_append(&b, NULL, 0); /* no-op */
    kv_buf_append_str(&b, "def");
    kv_buf_append_byte(&b, 0);
    kv_buf_append_byte(&b, 0xff);
    CHECK(buf_is(&b, "abcdef\0\xff", 8));
    kv_buf_printf(&b, "<%d:%s:%05.1f>", -42, "x", 3.14159);
    CHECK(buf_is(&b, "abcdef\0\xff<-42:x:003.1>", 21));
    /* printf past the initial capacity, several times */
    char big[300];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = 0;
    size_t before = b.len;
    for (int i = 0; i < 5; i++)
        kv_buf_printf(&b, "%s", big);
    CHECK(b.len == before + 5 * (sizeof big - 1));
    CHECK(b.cap >= b.len);
    CHECK(b.ptr[before] == 'q' && b.ptr[b.len - 1] == 'q');
    size_t cap = b.cap, len = b.len;
    kv_buf_reserve(&b, 10000);
    CHECK(b.len == len);
    CHECK(b.cap >= len + 10000);
    CHECK(b.cap >= cap);
    size_t n = 0;
    uint8_t *p = kv_buf_detach(&b, &n);
    CHECK(n == len);
    CHECK(b.ptr == NULL && b.len == 0 && b.cap == 0);
    CHECK(memcmp(p, "abcdef\0\xff", 8) == 0);
    free(p);
    /* free leaves it empty and reusable */
    kv_buf_append_str(&b, "again");
    kv_buf_free(&b);
    CHECK(b.ptr == NULL && b.len == 0 && b.cap == 0);
    kv_buf_append_str(&b, "reuse");
    CHECK(buf_is_str(&b, "reuse"));
    kv_buf_free(&b);
    kv_buf_free(&b); /* twice is fine */
}

static void test_buf_le(void)
{
    struct kv_buf b = {0};
    kv_buf_put_u16(&b, 0x1234);
    kv_buf_put_u32(&b, 0x89abcdefu);
    kv_buf_put_u64(&b, 0x0102030405060708ull);
    static const uint8_t want[] = {0x34, 0x12, 0xef, 0xcd, 0xab, 0x89, 8, 7, 6, 5, 4, 3, 2, 1};
    CHECK(buf_is(&b, want, sizeof want));
    CHECK(kv_get_u16(b.ptr) == 0x1234);
    CHECK(kv_get_u32(b.ptr + 2) == 0x89abcdefu);
    CHECK(kv_get_u64(b.ptr + 6) == 0x0102030405060708ull);
    kv_buf_free(&b);

    uint8_t p[8];
    kv_put_u16(p, 0xfffe);
    CHECK(p[0] == 0xfe && p[1] == 0xff);
    kv_put_u32(p, 0x80000001u);
    CHECK(p[0] == 1 && p[3] == 0x80);
    kv_put_u64(p, 0x8000000000000001ull);
    CHECK(p[0] == 1 && p[7] == 0x80);
    int bad = 0;
    for (int i = 0; i < 10000; i++) {
        uint64_t v = harness_rand() >> harness_below(64);
        kv_put_u16(p, (uint16_t)v);
        bad += kv_get_u16(p) != (uint16_t)v;
        kv_put_u32(p, (uint32_t)v);
        bad += kv_get_u32(p) != (uint32_t)v;
        kv_put_u64(p, v);
        bad += kv_get_u64(p) != v;
        for (int k = 0; k < 8; k++) /* byte k holds bits 8k..8k+7 */
            bad += p[k] != (uint8_t)(v >> (8 * k));
        struct kv_buf t = {0};
        kv_buf_put_u64(&t, v);
        bad += !buf_is(&t, p, 8);
        kv_buf_free(&t);
    }
    CHECK(bad == 0);
}

static int sign(int x)
{
    return (x > 0) - (x < 0);
}

static void test_slice_cmp(void)
{
    struct kv_slice e1 = kv_slice_make(NULL, 0), e2 = kv_slice_make("", 0);
    CHECK(kv_slice_cmp(e1, e2) == 0);
    CHECK(kv_slice_eq(e1, e2));
    CHECK(kv_slice_cmp(e1, kv_slice_make("a", 1)) < 0);
    CHECK(kv_slice_cmp(kv_slice_make("\0", 1), e1) > 0);
    CHECK(kv_slice_cmp(kv_slice_make("a", 1), kv_slice_make("b", 1)) < 0);
    CHECK(kv_slice_cmp(kv_slice_make("b", 1), kv_slice_make("a", 1)) > 0);
    CHECK(kv_slice_cmp(kv_slice_make("ab", 2), kv_slice_make("ab", 2)) == 0);
    CHECK(kv_slice_cmp(kv_slice_make("ab", 2), kv_slice_make("abc", 3)) < 0); /* shorter first */
    CHECK(kv_slice_cmp(kv_slice_make("abc", 3), kv_slice_make("ab", 2)) > 0);
    CHECK(kv_slice_cmp(kv_slice_make("ab\0", 3), kv_slice_make("ab", 2)) > 0);
    CHECK(kv_slice_cmp(kv_slice_make("b", 1), kv_slice_make("abc", 3)) > 0);     /* bytes before length */
    CHECK(kv_slice_cmp(kv_slice_make("\x80", 1), kv_slice_make("\x7f", 1)) > 0); /* unsigned bytes */
    CHECK(kv_slice_cmp(kv_slice_make("\xff", 1), kv_slice_make("\x00\x00", 2)) > 0);
    CHECK(!kv_slice_eq(kv_slice_make("a", 1), kv_slice_make("A", 1)));
    /* random short slices over a small alphabet against a reference, plus antisymmetry */
    int bad = 0;
    for (int i = 0; i < 20000; i++) {
        uint8_t a[4], b[4];
        size_t na = (size_t)harness_below(5), nb = (size_t)harness_below(5);
        for (size_t k = 0; k < 4; k++) {
            a[k] = (uint8_t)(harness_below(3) * 0x7f); /* 0x00, 0x7f, 0xfe */
            b[k] = (uint8_t)(harness_below(3) * 0x7f);
        }
        int want = 0;
        size_t k = 0;
        while (k < na && k < nb && a[k] == b[k])
            k++;
        if (k < na && k < nb)
            want = a[k] < b[k] ? -1 : 1;
        else
            want = (na > nb) - (na < nb);
        int got = kv_slice_cmp(kv_slice_make(a, na), kv_slice_make(b, nb));
        int rev = kv_slice_cmp(kv_slice_make(b, nb), kv_slice_make(a, na));
        bad += sign(got) != want || sign(rev) != -want;
    }
    CHECK(bad == 0);
}

/* ---- errors ----------------------------------------------------------------------------------- */

static void test_errors(void)
{
    CHECK(strcmp(kv_strerror(0), "ok") == 0);
    CHECK(strcmp(kv_errname(0), "ok") == 0);
    int errnos[] = {EIO, ENOENT, ENOSPC, EACCES, EINTR, EEXIST};
    for (size_t i = 0; i < sizeof errnos / sizeof errnos[0]; i++) {
        CHECK(strcmp(kv_strerror(errnos[i]), strerror(errnos[i])) == 0);
        CHECK(strcmp(kv_errname(errnos[i]), "io_error") == 0);
    }
    CHECK(strcmp(kv_strerror(ENOSPC), kv_strerror(EIO)) != 0);

    const char *names[KV_E_END - KV_E_NOT_FOUND];
    const char *texts[KV_E_END - KV_E_NOT_FOUND];
    int n = 0;
    for (int e = KV_E_NOT_FOUND; e < KV_E_END; e++, n++) {
        names[n] = kv_errname(e);
        texts[n] = kv_strerror(e);
        CHECK(names[n] != NULL && names[n][0] != 0);
        CHECK(texts[n] != NULL && texts[n][0] != 0);
        CHECK(strcmp(names[n], "unknown") != 0 && strcmp(names[n], "ok") != 0);
        CHECK(strcmp(names[n], "io_error") != 0);
        CHECK(strcmp(texts[n], "unknown error") != 0 && strcmp(texts[n], "ok") != 0);
        for (const char *c = names[n]; *c; c++) /* machine-readable: [a-z_] */
            CHECK((*c >= 'a' && *c <= 'z') || *c == '_');
    }
    CHECK(n == KV_E_END - KV_E_NOT_FOUND);
    for (int i = 0; i < n; i++) {
        for (int j = i + 1; j < n; j++) {
            if (strcmp(names[i], names[j]) == 0)
                printf("    codes %d and %d share the name %s\n", KV_E_NOT_FOUND + i, KV_E_NOT_FOUND + j,
                       names[i]);
            CHECK(strcmp(names[i], names[j]) != 0);
            CHECK(strcmp(texts[i], texts[j]) != 0);
        }
    }
    /* spot checks that the tables line up with the enum */
    CHECK(strcmp(kv_errname(KV_E_NOT_FOUND), "not_found") == 0);
    CHECK(strcmp(kv_errname(KV_E_CORRUPT), "corrupt") == 0);
    CHECK(strcmp(kv_errname(KV_E_INVALID), "invalid") == 0);
    CHECK(strcmp(kv_errname(KV_E_UNAVAILABLE), "unavailable") == 0);
    CHECK(strcmp(kv_strerror(KV_E_NOT_FOUND), "key not found") == 0);
    /* outside the range */
    CHECK(strcmp(kv_errname(KV_E_END), "unknown") == 0);
    CHECK(strcmp(kv_errname(KV_E_NOT_FOUND - 1), "unknown") == 0);
    CHECK(strcmp(kv_errname(-1), "unknown") == 0);
    CHECK(strcmp(kv_strerror(-1), "unknown error") == 0);
    CHECK(strcmp(kv_strerror(KV_E_END), "unknown error") == 0);
}

int main(void)
{
    printf("seed %llu\n", (unsigned long long)harness_seed());
    RUN(test_name_single_bytes);
    RUN(test_name_byte_pairs);
    RUN(test_name_random);
    RUN(test_name_cuts);
    RUN(test_name_root);
    RUN(test_name_case_insensitive_unique);
    RUN(test_name_reject);
    RUN(test_percent_decode);
    RUN(test_percent_round_trip);
    RUN(test_base64_vectors);
    RUN(test_base64_random);
    RUN(test_base64_reject);
    RUN(test_utf8_samples);
    RUN(test_utf8_exhaustive);
    RUN(test_json_string);
    RUN(test_crc32c);
    RUN(test_buf);
    RUN(test_buf_le);
    RUN(test_slice_cmp);
    RUN(test_errors);
    return harness_finish();
}
