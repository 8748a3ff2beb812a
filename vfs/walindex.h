/*
 * WAL and WAL-index (-shm) format helpers, written from SQLite's
 * "WAL-mode File Format" document.
 *
 * WAL file (big-endian):            WAL-index region 0 (native byte order):
 *   0  magic 0x377f0682/3             0   header copy 0 (48 bytes)
 *   4  format version 3007000         48  header copy 1
 *   8  page size                      96  nBackfill
 *   12 checkpoint sequence            100 aReadMark[5]
 *   16 salt-1, 20 salt-2              120 aLock[8] (lock bytes)
 *   24 checksum-1, 28 checksum-2      128 nBackfillAttempted, 132 unused
 * frame header (24): pgno, db size after commit (0 if not a commit),
 * salt-1, salt-2, checksum-1, checksum-2; then the page.
 * Each 32 KiB region: u32 page numbers (4062 in region 0, after the 136-byte
 * header; 4096 in the others) then 8192 u16 hash slots.
 */
#ifndef TPDB_WALINDEX_H
#define TPDB_WALINDEX_H

#include <stdint.h>

#define WAL_HDR_SIZE 32
#define WAL_FRAME_HDR_SIZE 24
#define WAL_MAGIC 0x377f0682u /* | 1: checksums over big-endian words */
#define WAL_VERSION 3007000u

#define WALI_HDR_SIZE 48
#define WALI_HDR_CKSUM_BYTES 40
#define WALI_CKPT_OFFSET 96
#define WALI_NBACKFILL 96
#define WALI_READMARK 100 /* + 4 * i */
#define WALI_NBACKFILL_ATTEMPTED 128
#define WALI_HEADER_BYTES 136
#define WALI_REGION_SIZE 32768
#define WALI_NPAGE 4096
#define WALI_NPAGE_ONE (WALI_NPAGE - WALI_HEADER_BYTES / 4)
#define WALI_NSLOT 8192
#define WALI_READMARK_NOT_USED 0xffffffffu

/* shm lock slots. */
#define WALI_LOCK_WRITE 0
#define WALI_LOCK_READ(i) (3 + (i))

/* A decoded WAL-index header. */
struct walIndexHdr {
    uint32_t version;
    uint32_t change;
    uint8_t is_init;
    uint8_t big_end_cksum;
    uint32_t page_size; /* decoded: 512..65536, or 0 */
    uint32_t mx_frame;
    uint32_t n_page;
    uint32_t frame_cksum[2];
    uint8_t salt[8]; /* as in the WAL header, raw bytes */
    uint32_t cksum[2];
};

/* 1 when this host stores integers big-endian. */
int walHostBigEndian(void);

/* Continues the WAL checksum (s[0], s[1]) over n bytes (a multiple of 8),
 * reading 32-bit words big-endian when `big` else little-endian. */
void walChecksum(int big, const uint8_t *p, size_t n, uint32_t s[2]);

/* Page size named by a 32-byte WAL header, 0 if the header is not a WAL
 * header or the size is not a power of two in 512..65536. */
uint32_t walHdrPageSize(const uint8_t *hdr);

/* Byte offset of frame `frame` (1-based) in a WAL of page_size pages. */
static inline int64_t walFrameOffset(uint32_t frame, uint32_t page_size)
{
    return WAL_HDR_SIZE +
           (int64_t)(frame - 1) * (WAL_FRAME_HDR_SIZE + (int64_t)page_size);
}

/* Encodes a WAL header (magic for this host's byte order) into hdr[32] and
 * returns its checksum in cksum. */
void walHdrEncode(uint8_t *hdr,
                  uint32_t page_size,
                  uint32_t ckpt_seq,
                  const uint8_t salt[8],
                  uint32_t cksum[2]);

/* Decodes one 48-byte WAL-index header copy. */
void walIndexHdrDecode(const uint8_t *p, struct walIndexHdr *h);

/* Encodes h into 48 bytes, setting version, is_init and cksum. */
void walIndexHdrEncode(struct walIndexHdr *h, uint8_t *p);

/* 1 when the 48-byte copy is initialised and its checksum is right. */
int walIndexHdrValid(const uint8_t *p);

/* The hash block (= shm region) holding `frame`, and the frame number
 * before its first entry. */
uint32_t walIndexBlock(uint32_t frame);
uint32_t walIndexBlockZero(uint32_t block);

/* Adds frame -> pgno to the page-number array and hash table of `region`
 * (the mapped 32 KiB shm region of block walIndexBlock(frame)). Clears the
 * block first when frame is its first entry, and clears entries left past
 * frame - 1 (a rolled back or abandoned append) when it finds any.
 * Returns 0, or -1 if the hash table is full (corrupt index). */
int walIndexAdd(uint8_t *region, uint32_t frame, uint32_t pgno);

/* Native-order u32 load and store on shm memory. */
uint32_t walShmGet32(const uint8_t *p);
void walShmPut32(uint8_t *p, uint32_t v);

#endif /* TPDB_WALINDEX_H */
