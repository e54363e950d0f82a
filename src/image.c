/* Images in (stb_image: PNG, JPEG, BMP, …) and label maps out (stb_image_write PNG, atomically). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include "segattn.h"
#include "util.h"

int sa_image_load(const char *path, int64_t max_pixels, sa_image *img, sa_error *err) {
    memset(img, 0, sizeof *img);
    if (max_pixels <= 0) max_pixels = SA_DEFAULT_MAX_PIXELS;
    FILE *f = fopen(path, "rb");
    if (!f) return sa_fail(err, SA_EXIT_INPUT, "%s: cannot open image: %s", path, strerror(errno));
    int w, h, comp;
    if (!stbi_info_from_file(f, &w, &h, &comp)) {
        fclose(f);
        return sa_fail(err, SA_EXIT_INPUT, "%s: not a decodable image (%s)", path, stbi_failure_reason());
    }
    if (w <= 0 || h <= 0) {
        fclose(f);
        return sa_fail(err, SA_EXIT_INPUT, "%s: image has no pixels (%dx%d)", path, w, h);
    }
    if ((int64_t)w * h > max_pixels) {
        fclose(f);
        return sa_fail(err, SA_EXIT_INPUT, "%s: %dx%d image is over the %lld-pixel limit (--max-pixels)", path, w, h,
                       (long long)max_pixels);
    }
    img->rgb = stbi_load_from_file(f, &img->w, &img->h, &comp, 3);
    fclose(f);
    if (!img->rgb) return sa_fail(err, SA_EXIT_INPUT, "%s: cannot decode image (%s)", path, stbi_failure_reason());
    return SA_OK;
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
