/* stb_image and stb_image_write compiled from the system's headers (libstb-dev), for the fuzz targets,
 * so that the decoders are instrumented like our own code. The program itself links -lstb.
 *
 * Four UBSan checks are off for stb alone (AddressSanitizer stays on, so its memory errors still count):
 * - pointer-overflow and nonnull-attribute: stb 2.27 computes `idata + 0` with idata NULL for a PNG whose
 *   first IDAT chunk is empty, then memcpy's 0 bytes to it (tests/fuzz/regress/image/png_empty_idat.png);
 * - shift: when a marker interrupts JPEG Huffman data, stb's bit counter goes negative and the next refill
 *   shifts a 32-bit word by 32 or more (tests/fuzz/regress/image/jpeg_marker_inside_huffman_code.jpg).
 *   x86 masks the count, so the shipped library only reads wrong bits and then refuses the image;
 * - signed-integer-overflow: stb adds every JPEG block's DC difference to an int without a bound and
 *   multiplies it by the quantiser before storing it as a short (tests/fuzz/regress/image/
 *   jpeg_dc_overflow.jpg: 300 blocks each adding -32767, quantiser 255). The compiled library wraps, as
 *   the cast to short does anyway, and decodes a garbled image; stb 2.28 refuses such a file instead.
 * Undefined in the letter of C, harmless in the compiled library, and they would stop every run early. */
#pragma clang attribute push(__attribute__((no_sanitize("pointer-overflow", "nonnull-attribute", "shift", "signed-integer-overflow"))), apply_to = function)
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#pragma clang attribute pop
