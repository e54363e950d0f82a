/* A small PNG reader for label maps: chunks (IHDR, PLTE, IDAT, IEND; ancillary chunks skipped), CRC-32,
 * zlib through stb_image's inflater into a buffer of exactly the expected size (so a stream that would
 * inflate to more is refused rather than followed), the five row filters, and 1/2/4/8-bit samples. */
#include "png_index.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stb/stb_image.h>

#include "util.h"

#define MAX_PNG_BYTES (256u << 20)

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

typedef struct {
    uint32_t t[256];
} crc_table;

static void crc_init(crc_table *ct) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int b = 0; b < 8; b++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        ct->t[i] = c;
    }
}

static uint32_t crc32_png(const crc_table *ct, const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) c = ct->t[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

static int paeth(int a, int b, int c) {
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

int png_index_decode(const uint8_t *data, size_t len, int64_t max_pixels, const char *where, int *w_out, int *h_out,
                     uint8_t **out, sa_error *err) {
    static const uint8_t SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    *out = NULL;
    *w_out = *h_out = 0;
    if (max_pixels <= 0) max_pixels = SA_DEFAULT_MAX_PIXELS;
    if (len < 8 || memcmp(data, SIG, 8) != 0) return sa_fail(err, SA_EXIT_INPUT, "%s: not a PNG file", where);
    size_t pos = 8, idat_len = 0;
    uint32_t w = 0, h = 0;
    int depth = 0, ctype = -1, seen_plte = 0, seen_iend = 0, idat_done = 0, n_idat = 0;
    uint8_t *idat = NULL;
    int code = SA_OK;
    crc_table crc;
    crc_init(&crc);
    for (int chunk = 0; !seen_iend && !code; chunk++) {
        if (len - pos < 12) {
            code = sa_fail(err, SA_EXIT_INPUT, "%s: truncated PNG (chunk %d at byte %zu)", where, chunk, pos);
            break;
        }
        uint32_t clen = be32(data + pos);
        const uint8_t *type = data + pos + 4, *body = data + pos + 8;
        char name[5] = {0};
        for (int i = 0; i < 4; i++) name[i] = (type[i] >= 'A' && type[i] <= 'Z') || (type[i] >= 'a' && type[i] <= 'z') ? (char)type[i] : '?';
        if (clen > 0x7fffffffu || clen > len - pos - 12) {
            code = sa_fail(err, SA_EXIT_INPUT, "%s: chunk %s at byte %zu: length %u runs past the end of the file", where, name, pos, clen);
            break;
        }
        if (crc32_png(&crc, type, (size_t)clen + 4) != be32(body + clen)) {
            code = sa_fail(err, SA_EXIT_INPUT, "%s: chunk %s at byte %zu: CRC mismatch", where, name, pos);
            break;
        }
        pos += (size_t)clen + 12;
        if (chunk == 0 && memcmp(type, "IHDR", 4) != 0) {
            code = sa_fail(err, SA_EXIT_INPUT, "%s: the first chunk is %s, not IHDR", where, name);
        } else if (memcmp(type, "IHDR", 4) == 0) {
            if (chunk != 0 || clen != 13) {
                code = sa_fail(err, SA_EXIT_INPUT, "%s: IHDR: %s", where, chunk ? "repeated" : "length is not 13");
                break;
            }
            w = be32(body), h = be32(body + 4), depth = body[8], ctype = body[9];
            if (w == 0 || h == 0 || w > 0x7fffffffu || h > 0x7fffffffu)
                code = sa_fail(err, SA_EXIT_INPUT, "%s: IHDR: invalid size %ux%u", where, w, h);
            else if ((int64_t)w * h > max_pixels)
                code = sa_fail(err, SA_EXIT_INPUT, "%s: %ux%u label map is over the %lld-pixel limit", where, w, h, (long long)max_pixels);
            else if (ctype != 0 && ctype != 3)
                code = sa_fail(err, SA_EXIT_INPUT, "%s: colour type %d: a label map must be a palette or grayscale PNG", where, ctype);
            else if (depth != 1 && depth != 2 && depth != 4 && depth != 8)
                code = sa_fail(err, SA_EXIT_INPUT, "%s: bit depth %d: only 1, 2, 4 and 8 bits per sample are read", where, depth);
            else if (body[10] != 0 || body[11] != 0)
                code = sa_fail(err, SA_EXIT_INPUT, "%s: IHDR: unknown compression or filter method", where);
            else if (body[12] == 1)
                code = sa_fail(err, SA_EXIT_INPUT, "%s: interlaced PNG label maps are not supported", where);
            else if (body[12] != 0)
                code = sa_fail(err, SA_EXIT_INPUT, "%s: IHDR: unknown interlace method %d", where, body[12]);
        } else if (memcmp(type, "PLTE", 4) == 0) {
            if (seen_plte || n_idat) code = sa_fail(err, SA_EXIT_INPUT, "%s: PLTE: repeated or after IDAT", where);
            else if (clen == 0 || clen % 3 || clen > 768) code = sa_fail(err, SA_EXIT_INPUT, "%s: PLTE: %u bytes", where, clen);
            seen_plte = 1;
        } else if (memcmp(type, "IDAT", 4) == 0) {
            if (idat_done) {
                code = sa_fail(err, SA_EXIT_INPUT, "%s: IDAT chunks are not consecutive", where);
                break;
            }
            if (idat_len + clen > MAX_PNG_BYTES) {
                code = sa_fail(err, SA_EXIT_INPUT, "%s: more than 256 MiB of image data", where);
                break;
            }
            uint8_t *grown = realloc(idat, idat_len + clen + 1);
            if (!grown) {
                code = sa_fail(err, SA_EXIT_INTERNAL, "%s: out of memory", where);
                break;
            }
            idat = grown;
            memcpy(idat + idat_len, body, clen);
            idat_len += clen;
            n_idat++;
        } else if (memcmp(type, "IEND", 4) == 0) {
            seen_iend = 1;
        } else if (!(type[0] & 0x20)) {
            code = sa_fail(err, SA_EXIT_INPUT, "%s: unknown critical chunk %s", where, name);
        }
        if (n_idat && memcmp(type, "IDAT", 4) != 0) idat_done = 1;
    }
    if (!code && ctype == 3 && !seen_plte) code = sa_fail(err, SA_EXIT_INPUT, "%s: palette PNG without PLTE", where);
    if (!code && !n_idat) code = sa_fail(err, SA_EXIT_INPUT, "%s: no image data (IDAT)", where);
    size_t stride = 0, raw_len = 0;
    if (!code) {
        stride = ((size_t)w * (size_t)depth + 7) / 8;
        raw_len = (stride + 1) * h;
        if (raw_len > 0x7fffffff) code = sa_fail(err, SA_EXIT_INPUT, "%s: %ux%u image is too large to inflate", where, w, h);
    }
    uint8_t *raw = NULL, *pix = NULL;
    if (!code) {
        raw = malloc(raw_len);
        pix = malloc((size_t)w * h);
        if (!raw || !pix) code = sa_fail(err, SA_EXIT_INTERNAL, "%s: out of memory for a %ux%u label map", where, w, h);
    }
    if (!code) {
        int got = stbi_zlib_decode_buffer((char *)raw, (int)raw_len, (const char *)idat, (int)idat_len);
        if (got < 0) code = sa_fail(err, SA_EXIT_INPUT, "%s: corrupt compressed data (%s)", where, stbi_failure_reason());
        else if ((size_t)got != raw_len)
            code = sa_fail(err, SA_EXIT_INPUT, "%s: image data inflates to %d bytes, %zu expected", where, got, raw_len);
    }
    /* Unfilter in place; the filter unit is one byte for every bit depth up to 8. */
    for (uint32_t y = 0; y < h && !code; y++) {
        uint8_t *row = raw + (size_t)y * (stride + 1), *cur = row + 1;
        const uint8_t *prev = y ? raw + (size_t)(y - 1) * (stride + 1) + 1 : NULL;
        int f = row[0];
        for (size_t x = 0; x < stride; x++) {
            int a = x ? cur[x - 1] : 0, b = prev ? prev[x] : 0, c = x && prev ? prev[x - 1] : 0;
            switch (f) {
            case 0: break;
            case 1: cur[x] = (uint8_t)(cur[x] + a); break;
            case 2: cur[x] = (uint8_t)(cur[x] + b); break;
            case 3: cur[x] = (uint8_t)(cur[x] + ((a + b) >> 1)); break;
            case 4: cur[x] = (uint8_t)(cur[x] + paeth(a, b, c)); break;
            default: code = sa_fail(err, SA_EXIT_INPUT, "%s: row %u: unknown filter type %d", where, y, f); x = stride; break;
            }
        }
        if (code) break;
        uint8_t *o = pix + (size_t)y * w;
        if (depth == 8) {
            memcpy(o, cur, w);
        } else {
            int per = 8 / depth, mask = (1 << depth) - 1;
            for (uint32_t x = 0; x < w; x++) {
                int shift = 8 - depth * (int)(x % (uint32_t)per + 1);
                o[x] = (uint8_t)((cur[x / (uint32_t)per] >> shift) & mask);
            }
        }
    }
    free(idat);
    free(raw);
    if (code) {
        free(pix);
        return code;
    }
    *out = pix;
    *w_out = (int)w, *h_out = (int)h;
    return SA_OK;
}

int png_index_load(const char *path, int64_t max_pixels, int *w, int *h, uint8_t **out, sa_error *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return sa_fail(err, SA_EXIT_INPUT, "%s: cannot open label map: %s", path, strerror(errno));
    int code = SA_OK;
    uint8_t *data = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) code = sa_fail(err, SA_EXIT_INPUT, "%s: cannot read", path);
    else if ((unsigned long)size > MAX_PNG_BYTES) code = sa_fail(err, SA_EXIT_INPUT, "%s: larger than 256 MiB", path);
    else if (!(data = malloc((size_t)size + 1))) code = sa_fail(err, SA_EXIT_INTERNAL, "%s: out of memory", path);
    else if (fread(data, 1, (size_t)size, f) != (size_t)size) code = sa_fail(err, SA_EXIT_INPUT, "%s: read error", path);
    fclose(f);
    if (!code) code = png_index_decode(data, (size_t)size, max_pixels, path, w, h, out, err);
    free(data);
    return code;
}
