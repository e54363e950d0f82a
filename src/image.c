/* Images in (stb_image: PNG, JPEG, BMP, …) and label maps out (stb_image_write PNG, atomically). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include "image.h"
#include "segattn.h"
#include "util.h"

/* Two holes in stb_image 2.27's (Debian's libstb) JPEG decoder, both found by tests/fuzz/fuzz_image:
 * - it builds a Huffman table before checking that its 16 code counts add up to at most 256, then copies
 *   that many symbol bytes into a 256-byte array, overwriting the decoder's state;
 * - a scan may name a table no DHT segment defined: stb then decodes with uninitialised memory (valgrind
 *   sees it in the shipped library) and can trip its own assert, aborting a whole batch.
 * Walk the markers the way stb does (resynchronising on 0xFF, so markers after entropy-coded data are
 * seen too) and refuse either before stb reads them. Returns the offset of the bad segment and sets
 * *what, or returns 0 when there is none. */
static size_t jpeg_bad_huffman(const uint8_t *b, size_t n, const char **what) {
    size_t p = 0;
    int defined[2][4] = {{0}}; /* [DC, AC][table id] */
    int progressive = 0;
    if (n < 2 || b[0] != 0xFF) return 0;
    while (p < n && b[p] == 0xFF) p++;
    if (p >= n || b[p] != 0xD8) return 0; /* not a JPEG */
    p++;
    while (p < n) {
        if (b[p] != 0xFF) { p++; continue; }
        size_t at = p;
        while (p < n && b[p] == 0xFF) p++;
        if (p >= n) break;
        uint8_t m = b[p++];
        if (m == 0xD9) break;                                        /* EOI: stb reads no further */
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue; /* stuffing, TEM, RSTn, SOI */
        if (p + 2 > n) break;
        size_t len = (size_t)b[p] << 8 | b[p + 1];
        if (len < 2) break;                                          /* stb refuses the segment */
        if (m == 0xC0 || m == 0xC1 || m == 0xC2) progressive = m == 0xC2; /* the frames stb decodes */
        if (m == 0xC4) {
            long left = (long)len - 2;
            size_t q = p + 2;
            while (left > 0) {                                       /* as stb reads it: past `len` if told to */
                if (q >= n) return 0;
                int table_class = b[q] >> 4, table_id = b[q] & 15;
                q++;
                unsigned codes = 0;
                for (int i = 0; i < 16; i++, q++) codes += q < n ? b[q] : 0;
                if (codes > 256) return *what = "Huffman table has more than 256 codes", at;
                if (table_class <= 1 && table_id <= 3) defined[table_class][table_id] = 1; /* else stb refuses */
                q += codes;
                left -= 17 + (long)codes;
            }
        } else if (m == 0xDA && p + 3 <= n) {
            /* Ns, Ns x (component, DC id << 4 | AC id), Ss, Se, Ah << 4 | Al. A baseline scan decodes all 64
             * coefficients with both tables, whatever Se says (stb sets it to 63). In a progressive one, a
             * first DC scan (Ss 0, Ah 0) uses the DC table, a scan past coefficient 0 the AC one. */
            size_t ns = b[p + 2], q = p + 3 + 2 * ns;
            if (q + 3 > n) break;
            int uses_dc = !progressive || (b[q] == 0 && (b[q + 2] >> 4) == 0);
            int uses_ac = !progressive || b[q] > 0 || b[q + 1] > 0;
            for (size_t c = 0; c < ns; c++) {
                int dc = b[p + 4 + 2 * c] >> 4, ac = b[p + 4 + 2 * c] & 15;
                if ((uses_dc && dc <= 3 && !defined[0][dc]) || (uses_ac && ac <= 3 && !defined[1][ac]))
                    return *what = "scan uses a Huffman table that no DHT segment defined", at;
            }
        }
        p += len;
    }
    return 0;
}

/* stb_image 2.27 reads the numbers of a PNM header into an int without an overflow check (undefined
 * behaviour, found by tests/fuzz/fuzz_image). Returns the byte offset of a header number of more than 9
 * digits, or 0 when the header (width, height, maxval) is sane or the data is not a binary PNM. */
static size_t pnm_oversized_number(const uint8_t *p, size_t len) {
    if (len < 2 || p[0] != 'P' || (p[1] != '5' && p[1] != '6')) return 0;
    size_t i = 2;
    for (int field = 0; field < 3 && i < len; field++) {
        for (;;) { /* whitespace and comments, as stb skips them */
            while (i < len && (p[i] == ' ' || (p[i] >= '\t' && p[i] <= '\r'))) i++;
            if (i < len && p[i] == '#') {
                while (i < len && p[i] != '\n' && p[i] != '\r') i++;
                continue;
            }
            break;
        }
        size_t start = i;
        while (i < len && p[i] >= '0' && p[i] <= '9') i++;
        if (i - start > 9) return start;
        if (i == start) return 0; /* not a number: stb reports the malformed header itself */
    }
    return 0;
}

/* stb_image 2.27 grows its IDAT buffer to a chunk's declared length before checking that the file holds
 * that many bytes: a 200-byte PNG claiming a 2 GiB chunk makes it allocate 2 GiB (found by
 * tests/fuzz/fuzz_image). stb follows the chunk lengths exactly as this walk does and fails on a chunk
 * that runs past the end anyway, so refusing one first changes no decodable image. Returns the offset of
 * the first such chunk, or 0 when every chunk up to IEND fits (or the data is not a PNG). */
static size_t png_chunk_past_end(const uint8_t *b, size_t n) {
    static const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (n < 8 || memcmp(b, signature, 8) != 0) return 0;
    for (size_t p = 8; p + 8 <= n;) {
        size_t length = (size_t)b[p] << 24 | (size_t)b[p + 1] << 16 | (size_t)b[p + 2] << 8 | b[p + 3];
        if (memcmp(b + p + 4, "IEND", 4) == 0) return 0;
        if (length > n - (p + 8)) return p;
        p += 8 + length + 4; /* header, data, CRC */
    }
    return 0;
}

/* Largest encoded file read: generous for any format at the pixel cap (BMP/PPM are about 3-4 bytes a pixel,
 * 16-bit PNG 8), and a bound on memory before a single pixel is decoded. */
static int64_t max_file_bytes(int64_t max_pixels) {
    return max_pixels > (INT64_MAX - (64 << 20)) / 8 ? INT64_MAX : 8 * max_pixels + (64 << 20);
}

int sa_image_decode(const uint8_t *bytes, size_t len, const char *path, int64_t max_pixels, sa_image *img,
                    sa_error *err) {
    memset(img, 0, sizeof *img);
    if (max_pixels <= 0) max_pixels = SA_DEFAULT_MAX_PIXELS;
    if (len == 0) return sa_fail(err, SA_EXIT_INPUT, "%s: empty file, not an image", path);
    if (len > INT_MAX) return sa_fail(err, SA_EXIT_INPUT, "%s: file of %zu bytes is too large to decode", path, len);
    const char *jpeg_problem = NULL;
    size_t bad_jpeg = jpeg_bad_huffman(bytes, len, &jpeg_problem);
    if (bad_jpeg) return sa_fail(err, SA_EXIT_INPUT, "%s: corrupt JPEG at byte %zu: %s", path, bad_jpeg, jpeg_problem);
    size_t bad_pnm = pnm_oversized_number(bytes, len);
    if (bad_pnm) return sa_fail(err, SA_EXIT_INPUT, "%s: corrupt PNM: header number at byte %zu is too large", path, bad_pnm);
    size_t bad_chunk = png_chunk_past_end(bytes, len);
    if (bad_chunk)
        return sa_fail(err, SA_EXIT_INPUT, "%s: truncated PNG: chunk at byte %zu runs past the end of the file", path,
                       bad_chunk);
    int w = 0, h = 0, comp;
    if (!stbi_info_from_memory(bytes, (int)len, &w, &h, &comp))
        return sa_fail(err, SA_EXIT_INPUT, "%s: not a decodable image (%s)", path, stbi_failure_reason());
    if (w <= 0 || h <= 0) return sa_fail(err, SA_EXIT_INPUT, "%s: image has no pixels (%dx%d)", path, w, h);
    /* stb_image 2.27 expands a 16-bit grey PNM to RGB as if it were 8-bit, then reads twice the bytes of
     * that buffer (found by tests/fuzz/fuzz_image): refuse it. 16-bit RGB PNM needs no expansion. */
    if (len >= 2 && bytes[0] == 'P' && bytes[1] == '5' && stbi_is_16_bit_from_memory(bytes, (int)len))
        return sa_fail(err, SA_EXIT_INPUT, "%s: 16-bit greyscale PNM is not supported", path);
    if ((int64_t)w * h > max_pixels)
        return sa_fail(err, SA_EXIT_INPUT, "%s: %dx%d image is over the %lld-pixel limit (--max-pixels)", path, w, h,
                       (long long)max_pixels);
    int dw = 0, dh = 0;
    img->rgb = stbi_load_from_memory(bytes, (int)len, &dw, &dh, &comp, 3);
    if (!img->rgb) return sa_fail(err, SA_EXIT_INPUT, "%s: cannot decode image (%s)", path, stbi_failure_reason());
    /* The decoder must agree with the header it was judged by (the cap and every later size use these). */
    if (dw != w || dh != h) {
        sa_image_free(img);
        return sa_fail(err, SA_EXIT_INPUT, "%s: decoded size %dx%d differs from the header's %dx%d", path, dw, dh, w, h);
    }
    img->w = w, img->h = h;
    return SA_OK;
}

int sa_image_load(const char *path, int64_t max_pixels, sa_image *img, sa_error *err) {
    memset(img, 0, sizeof *img);
    if (max_pixels <= 0) max_pixels = SA_DEFAULT_MAX_PIXELS;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sa_fail(err, SA_EXIT_INPUT, "%s: cannot open image: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return sa_fail(err, SA_EXIT_INPUT, "%s: not a regular file", path);
    }
    if ((int64_t)st.st_size > max_file_bytes(max_pixels) || (uint64_t)st.st_size > INT_MAX) {
        close(fd);
        return sa_fail(err, SA_EXIT_INPUT, "%s: file of %lld bytes is over the size limit for %lld pixels (--max-pixels)",
                       path, (long long)st.st_size, (long long)max_pixels);
    }
    size_t len = (size_t)st.st_size, got = 0;
    uint8_t *bytes = malloc(len ? len : 1);
    if (!bytes) {
        close(fd);
        return sa_fail(err, SA_EXIT_INTERNAL, "%s: out of memory for %zu bytes", path, len);
    }
    while (got < len) {
        ssize_t r = read(fd, bytes + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            free(bytes), close(fd);
            return sa_fail(err, SA_EXIT_INPUT, "%s: read error: %s", path, strerror(e));
        }
        if (r == 0) break; /* shrank while reading: decode what is there */
        got += (size_t)r;
    }
    close(fd);
    int code = sa_image_decode(bytes, got, path, max_pixels, img, err);
    free(bytes);
    return code;
}

void sa_image_free(sa_image *img) {
    stbi_image_free(img->rgb);
    img->rgb = NULL;
}

/* Pascal VOC's colour map: the bits of the class id spread over the high bits of R, G and B. */
void sa_default_color(int k, uint8_t rgb[3]) {
    rgb[0] = rgb[1] = rgb[2] = 0;
    for (int shift = 7; k; shift--, k >>= 3) {
        rgb[0] |= (uint8_t)((k & 1) << shift);
        rgb[1] |= (uint8_t)(((k >> 1) & 1) << shift);
        rgb[2] |= (uint8_t)(((k >> 2) & 1) << shift);
    }
}

/* Cityscapes trainId → labelId (the test server's format). */
static const uint8_t CITYSCAPES_LABEL_ID[19] = {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33};

static void to_file(void *context, void *data, int size) { fwrite(data, 1, (size_t)size, (FILE *)context); }

int sa_labels_write_png(const char *path, const sa_labels *lab, const sa_model *m, int kind, const sa_image *img,
                        float opacity, sa_error *err) {
    int channels = kind == SA_OUT_INDEX || kind == SA_OUT_CITYSCAPES_ID ? 1 : 3;
    size_t n = (size_t)lab->w * lab->h;
    uint8_t *pix = malloc(n * (size_t)channels);
    if (!pix) return sa_fail(err, SA_EXIT_INTERNAL, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++) {
        int k = lab->id[i];
        if (kind == SA_OUT_INDEX) {
            pix[i] = (uint8_t)k;
        } else if (kind == SA_OUT_CITYSCAPES_ID) {
            pix[i] = k < 19 ? CITYSCAPES_LABEL_ID[k] : 0;
        } else {
            const uint8_t *c = sa_model_palette(m, k);
            for (int j = 0; j < 3; j++) {
                float v = c[j];
                if (kind == SA_OUT_OVERLAY && img) v = opacity * v + (1.f - opacity) * img->rgb[i * 3 + j];
                pix[i * 3 + j] = (uint8_t)(v + 0.5f);
            }
        }
    }
    atomic_out o;
    int code = atomic_open(&o, path, err);
    if (code) { free(pix); return code; }
    int ok = stbi_write_png_to_func(to_file, o.f, lab->w, lab->h, channels, pix, lab->w * channels);
    free(pix);
    if (!ok) {
        atomic_abort(&o);
        return sa_fail(err, SA_EXIT_OUTPUT, "%s: PNG encoding failed", path);
    }
    return atomic_commit(&o, err);
}
