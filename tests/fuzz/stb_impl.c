/* stb_image and stb_image_write compiled from the system's headers (libstb-dev), for the fuzz targets,
 * so that the decoders are instrumented like our own code. The program itself links -lstb.
 *
 * UBSan's pointer-overflow and nonnull-attribute checks are off for stb alone: stb 2.27 computes
 * `idata + 0` with idata NULL for a PNG whose first IDAT chunk is empty, then memcpy's 0 bytes to it:
 * undefined in the letter of C but harmless, and it would stop every fuzz run early. tests/fuzz/regress/image/png_empty_idat.png keeps that input. */
#pragma clang attribute push(__attribute__((no_sanitize("pointer-overflow", "nonnull-attribute"))), apply_to = function)
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#pragma clang attribute pop
