/* libFuzzer target: image decoding (sa_image_decode: stb_image's PNG, JPEG, BMP, GIF, ... decoders behind
 * the pixel cap). stb_image is compiled into the target from the system header (stb_impl.c) so the
 * decoders are instrumented too. */
#include <stdlib.h>

#include "image.h"

/* image.c's PNG writer refers to the model's palette; the decoder never does. */
const uint8_t *sa_model_palette(const sa_model *m, int k) {
    static const uint8_t black[3];
    (void)m, (void)k;
    return black;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sa_image img;
    sa_error err = {0};
    /* A 4-megapixel cap keeps each decode within libFuzzer's memory limit; the cap logic is the same. */
    if (sa_image_decode(data, size, "fuzz.img", 4 << 20, &img, &err) == SA_OK) {
        if (img.w < 1 || img.h < 1 || (int64_t)img.w * img.h > (4 << 20) || !img.rgb) abort();
        volatile uint8_t sink = img.rgb[(size_t)img.w * img.h * 3 - 1]; /* the whole buffer is there */
        (void)sink;
        sa_image_free(&img);
    } else if (img.rgb) {
        abort();
    }
    return 0;
}
