/* common/kv_crc.h - CRC32C (Castagnoli), the checksum of every record on disk and on the wire.
 * Backed by ISA-L's crc32_iscsi, which picks the SSE4.2/PCLMUL code path at run time. */
#ifndef KV_CRC_H
#define KV_CRC_H

#include <stddef.h>
#include <stdint.h>

/* Extends crc (start with 0 for a fresh checksum) over len bytes of buf; chaining calls over
 * consecutive pieces gives the checksum of the concatenation. */
uint32_t kv_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
