/* Image decoding from memory: the one code path behind sa_image_load, and the image fuzz target's entry. */
#ifndef SA_IMAGE_H
#define SA_IMAGE_H
#include <stddef.h>
#include <stdint.h>

#include "segattn.h"

/* Decodes an encoded image (PNG, JPEG, BMP, ...) to RGB. `path` only names it in errors. Refuses more than
 * max_pixels pixels (0: SA_DEFAULT_MAX_PIXELS) before decoding, from the header alone. */
int sa_image_decode(const uint8_t *bytes, size_t len, const char *path, int64_t max_pixels, sa_image *img,
                    sa_error *err);

#endif
