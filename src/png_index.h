/* Label PNGs as their stored values: palette PNGs give palette indices (what Pillow returns for a 'P'
 * image, and what Pascal VOC's SegmentationClass files hold), grayscale PNGs give gray levels. stb_image
 * would expand a palette to RGB, hence this small decoder. */
#ifndef SA_PNG_INDEX_H
#define SA_PNG_INDEX_H
#include <stddef.h>
#include <stdint.h>

#include "segattn.h"

/* Decodes a non-interlaced PNG of colour type 3 (palette, 1/2/4/8 bits) or 0 (grayscale, 1/2/4/8 bits;
 * values as stored, not rescaled to 0-255) into w×h bytes (*out, malloc'd). Every length, CRC and
 * filter byte is checked; images over max_pixels (0: SA_DEFAULT_MAX_PIXELS) are refused before any
 * allocation. `where` names the source in errors. */
int png_index_decode(const uint8_t *data, size_t len, int64_t max_pixels, const char *where, int *w, int *h,
                     uint8_t **out, sa_error *err);
/* The same from a file. */
int png_index_load(const char *path, int64_t max_pixels, int *w, int *h, uint8_t **out, sa_error *err);

#endif
