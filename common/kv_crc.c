/* common/kv_crc.c - CRC32C over ISA-L. ISA-L keeps the running value un-inverted and takes an int
 * length, so this wrapper inverts at the edges (standard CRC32C: "123456789" -> 0xe3069283) and
 * feeds long buffers in pieces. */
#include "common/kv_crc.h"

#include <isa-l/crc.h>
#include <limits.h>

uint32_t kv_crc32c(uint32_t crc, const void *buf, size_t len)
{
    unsigned char *p = (unsigned char *)buf; /* ISA-L's prototype lacks const; it only reads */
    uint32_t c = ~crc;
    while (len > 0) {
        size_t n = len > (size_t)(INT_MAX / 2) ? (size_t)(INT_MAX / 2) : len;
        c = crc32_iscsi(p, (int)n, c);
        p += n;
        len -= n;
    }
    return ~c;
}
