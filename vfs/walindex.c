/*
 * WAL and WAL-index format helpers; the layout table is in walindex.h.
 */
#include <string.h>

#include "base/base.h"
#include "vfs/walindex.h"

int walHostBigEndian(void)
{
    const uint16_t one = 1;
    uint8_t first;
    memcpy(&first, &one, 1);
    return first == 0;
}

void walChecksum(int big, const uint8_t *p, size_t n, uint32_t s[2])
{
    uint32_t s0 = s[0], s1 = s[1];
    if (big) {
        for (size_t i = 0; i + 8 <= n; i += 8) {
            s0 += tpdbGetBe32(p + i) + s1;
            s1 += tpdbGetBe32(p + i + 4) + s0;
        }
    } else {
        for (size_t i = 0; i + 8 <= n; i += 8) {
            s0 += tpdbGet32(p + i) + s1;
            s1 += tpdbGet32(p + i + 4) + s0;
        }
    }
    s[0] = s0;
    s[1] = s1;
}

static int pageSizeValid(uint32_t n)
{
    return n >= 512 && n <= 65536 && (n & (n - 1)) == 0;
}

uint32_t walHdrPageSize(const uint8_t *hdr)
{
    uint32_t magic = tpdbGetBe32(hdr);
    uint32_t page_size = tpdbGetBe32(hdr + 8);
    if ((magic & ~1u) != WAL_MAGIC || !pageSizeValid(page_size)) {
        return 0;
    }
    return page_size;
}

void walHdrEncode(uint8_t *hdr,
                  uint32_t page_size,
                  uint32_t ckpt_seq,
                  const uint8_t salt[8],
                  uint32_t cksum[2])
{
    int big = walHostBigEndian();
    tpdbPutBe32(hdr, WAL_MAGIC | (uint32_t)big);
    tpdbPutBe32(hdr + 4, WAL_VERSION);
    tpdbPutBe32(hdr + 8, page_size);
    tpdbPutBe32(hdr + 12, ckpt_seq);
    memcpy(hdr + 16, salt, 8);
    cksum[0] = cksum[1] = 0;
    walChecksum(big, hdr, 24, cksum);
    tpdbPutBe32(hdr + 24, cksum[0]);
    tpdbPutBe32(hdr + 28, cksum[1]);
}

uint32_t walShmGet32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

void walShmPut32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static uint16_t shmGet16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static void shmPut16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}

void walIndexHdrDecode(const uint8_t *p, struct walIndexHdr *h)
{
    uint16_t sz = shmGet16(p + 14);
    h->version = walShmGet32(p);
    h->change = walShmGet32(p + 8);
    h->is_init = p[12];
    h->big_end_cksum = p[13];
    h->page_size = sz == 1 ? 65536 : sz;
    h->mx_frame = walShmGet32(p + 16);
    h->n_page = walShmGet32(p + 20);
    h->frame_cksum[0] = walShmGet32(p + 24);
    h->frame_cksum[1] = walShmGet32(p + 28);
    memcpy(h->salt, p + 32, 8);
    h->cksum[0] = walShmGet32(p + 40);
    h->cksum[1] = walShmGet32(p + 44);
}

void walIndexHdrEncode(struct walIndexHdr *h, uint8_t *p)
{
    uint32_t ps = h->page_size;
    h->version = WAL_VERSION;
    h->is_init = 1;
    memset(p, 0, WALI_HDR_SIZE);
    walShmPut32(p, h->version);
    walShmPut32(p + 8, h->change);
    p[12] = h->is_init;
    p[13] = h->big_end_cksum;
    shmPut16(p + 14, (uint16_t)((ps & 0xff00) | (ps >> 16)));
    walShmPut32(p + 16, h->mx_frame);
    walShmPut32(p + 20, h->n_page);
    walShmPut32(p + 24, h->frame_cksum[0]);
    walShmPut32(p + 28, h->frame_cksum[1]);
    memcpy(p + 32, h->salt, 8);
    h->cksum[0] = h->cksum[1] = 0;
    walChecksum(walHostBigEndian(), p, WALI_HDR_CKSUM_BYTES, h->cksum);
    walShmPut32(p + 40, h->cksum[0]);
    walShmPut32(p + 44, h->cksum[1]);
}

int walIndexHdrValid(const uint8_t *p)
{
    uint32_t s[2] = {0, 0};
    if (p[12] != 1 || walShmGet32(p) != WAL_VERSION) {
        return 0;
    }
    walChecksum(walHostBigEndian(), p, WALI_HDR_CKSUM_BYTES, s);
    return s[0] == walShmGet32(p + 40) && s[1] == walShmGet32(p + 44);
}

uint32_t walIndexBlock(uint32_t frame)
{
    if (frame <= WALI_NPAGE_ONE) {
        return 0;
    }
    return (frame - WALI_NPAGE_ONE - 1) / WALI_NPAGE + 1;
}

uint32_t walIndexBlockZero(uint32_t block)
{
    return block == 0 ? 0 : WALI_NPAGE_ONE + (block - 1) * WALI_NPAGE;
}

static unsigned hashKey(uint32_t pgno)
{
    return (pgno * 383u) & (WALI_NSLOT - 1);
}

/* Removes the entries of frames after index `keep` of the block. */
static void blockTruncate(uint8_t *pgnos,
                          uint32_t npage,
                          uint8_t *hash,
                          uint32_t keep)
{
    for (unsigned i = 0; i < WALI_NSLOT; i++) {
        if (shmGet16(hash + 2 * i) > keep) {
            shmPut16(hash + 2 * i, 0);
        }
    }
    memset(pgnos + 4 * (size_t)keep, 0, 4 * (size_t)(npage - keep));
}

int walIndexAdd(uint8_t *region, uint32_t frame, uint32_t pgno)
{
    uint32_t block = walIndexBlock(frame);
    uint32_t idx = frame - walIndexBlockZero(block);
    uint8_t *pgnos = region + (block == 0 ? WALI_HEADER_BYTES : 0);
    uint32_t npage = block == 0 ? WALI_NPAGE_ONE : WALI_NPAGE;
    uint8_t *hash = region + 4 * WALI_NPAGE;
    unsigned key = hashKey(pgno);

    if (idx == 1) {
        memset(pgnos, 0, (size_t)(hash + 2 * WALI_NSLOT - pgnos));
    } else if (walShmGet32(pgnos + 4 * (size_t)(idx - 1)) != 0) {
        blockTruncate(pgnos, npage, hash, idx - 1);
    }
    walShmPut32(pgnos + 4 * (size_t)(idx - 1), pgno);
    for (unsigned n = 0; shmGet16(hash + 2 * key) != 0; n++) {
        if (n >= WALI_NSLOT) {
            return -1;
        }
        key = (key + 1) & (WALI_NSLOT - 1);
    }
    shmPut16(hash + 2 * key, (uint16_t)idx);
    return 0;
}
