/* Inference modes as mmseg runs them (SPEC §11-12):
 *
 *   test scale   the image is resized, keeping its aspect ratio, into a (long, short) box with cv2's
 *                bilinear rule on uint8; the network sees the resized image; the logits come back to the
 *                original size by a second bilinear resize (align_corners of the config).
 *   whole        one pass; stride-8 logits → network input size → original size.
 *   slide        windows of crop (hc, wc) every stride (hs, ws), the last one shifted back inside the image;
 *                each window's logits are resized to the window, added into a full-size buffer, and the
 *                sum is divided by the per-pixel window count.
 *   TTA          for each ratio (and each flip): the logits at the original size (flipped back), softmax
 *                over classes, summed in mmseg's order (ratio-major, unflipped first), divided by the count,
 *                argmax (first maximum wins).
 *
 * Ratios follow mmseg 1.x when no test scale is set (the image's own size times the ratio, rounded as
 * int(dim·r + 0.5), then the keep-ratio fit) and mmseg 0.x's MultiScaleFlipAug when one is (the box
 * becomes (int(long·r), int(short·r))). */
#include "infer.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static int resolved_mode(const sa_model *m, const sa_run_opts *o) {
    int mode = o ? o->mode : SA_MODE_CONFIG;
    if (mode == SA_MODE_CONFIG) mode = m->cfg.slide ? SA_MODE_SLIDE : SA_MODE_WHOLE;
    return mode;
}

int infer_is_plain(const sa_model *m, const sa_run_opts *o) {
    if (resolved_mode(m, o) != SA_MODE_WHOLE) return 0;
    return !o || (o->scale[0] <= 0 && o->scale[1] <= 0 && o->n_ratios == 0 && !o->flip);
}

void infer_rescale_size(int w, int h, double box_a, double box_b, int *nw, int *nh) {
    double lng = box_a > box_b ? box_a : box_b, sht = box_a > box_b ? box_b : box_a;
    double fl = lng / (double)(w > h ? w : h), fs = sht / (double)(w > h ? h : w);
    double f = fl < fs ? fl : fs;
    *nw = (int)((double)w * f + 0.5);
    *nh = (int)((double)h * f + 0.5);
}

/* ---- cv2.resize(INTER_LINEAR) on uint8 ------------------------------------------------------------ */

typedef struct {
    int i0, i1;
    int w0, w1; /* weights scaled by 2048 (OpenCV's INTER_RESIZE_COEF_SCALE) */
} cv_tap;

/* One axis of OpenCV's resizeGeneric set-up. Columns are clamped with their weight set to (1, 0);
 * rows keep their weights and clip the row index (OpenCV does exactly that, and the rounding of the
 * vertical pass makes the two differ). */
static void cv_axis(int src, int dst, int is_row, cv_tap *t) {
    double inv_scale = (double)dst / (double)src, scale = 1. / inv_scale;
    for (int d = 0; d < dst; d++) {
        float f = (float)(((double)d + 0.5) * scale - 0.5);
        int s = (int)floorf(f);
        f -= (float)s;
        if (!is_row) {
            if (s < 0) f = 0, s = 0;
            if (s >= src - 1) f = 0, s = src - 1;
        }
        t[d].w0 = (int)lrintf((1.f - f) * 2048.f);
        t[d].w1 = (int)lrintf(f * 2048.f);
        int s0 = s, s1 = s + 1;
        if (s0 < 0) s0 = 0;
        if (s0 > src - 1) s0 = src - 1;
        if (s1 < 0) s1 = 0;
        if (s1 > src - 1) s1 = src - 1;
        t[d].i0 = s0, t[d].i1 = s1;
    }
}

int infer_resize_u8(const sa_image *src, int nw, int nh, sa_image *dst, sa_error *err) {
    memset(dst, 0, sizeof *dst);
    if (nw < 1 || nh < 1) return sa_fail(err, SA_EXIT_INPUT, "resize: %dx%d image would become %dx%d", src->w, src->h, nw, nh);
    dst->rgb = malloc((size_t)nw * nh * 3);
    if (!dst->rgb) return sa_fail(err, SA_EXIT_INTERNAL, "out of memory for a %dx%d image", nw, nh);
    dst->w = nw, dst->h = nh;
    const int sw = src->w, sh = src->h;
    if (nw == sw && nh == sh) {
        memcpy(dst->rgb, src->rgb, (size_t)nw * nh * 3);
        return SA_OK;
    }
    if (sw == 2 * nw && sh == 2 * nh) { /* cv2 turns an exact halving into INTER_AREA's 2×2 average */
#pragma omp parallel for schedule(static)
        for (int y = 0; y < nh; y++) {
            const uint8_t *r0 = src->rgb + (size_t)(2 * y) * sw * 3, *r1 = r0 + (size_t)sw * 3;
            uint8_t *o = dst->rgb + (size_t)y * nw * 3;
            for (int x = 0; x < nw; x++)
                for (int c = 0; c < 3; c++) {
                    int i = 6 * x + c;
                    o[3 * x + c] = (uint8_t)((r0[i] + r0[i + 3] + r1[i] + r1[i + 3] + 2) >> 2);
                }
        }
        return SA_OK;
    }
    cv_tap *tx = malloc((size_t)nw * sizeof *tx), *ty = malloc((size_t)nh * sizeof *ty);
    if (!tx || !ty) {
        free(tx), free(ty), sa_image_free(dst);
        return sa_fail(err, SA_EXIT_INTERNAL, "out of memory");
    }
    cv_axis(sw, nw, 0, tx);
    cv_axis(sh, nh, 1, ty);
    int failed = 0;
#pragma omp parallel
    {
        int *h0 = malloc((size_t)nw * 3 * sizeof *h0), *h1 = malloc((size_t)nw * 3 * sizeof *h1);
        if (!h0 || !h1) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int y = 0; y < nh; y++) {
            if (!h0 || !h1) continue;
            int *hb[2] = {h0, h1};
            int rows[2] = {ty[y].i0, ty[y].i1};
            for (int r = 0; r < 2; r++) {
                const uint8_t *s = src->rgb + (size_t)rows[r] * sw * 3;
                for (int x = 0; x < nw; x++)
                    for (int c = 0; c < 3; c++)
                        hb[r][3 * x + c] = s[3 * tx[x].i0 + c] * tx[x].w0 + s[3 * tx[x].i1 + c] * tx[x].w1;
            }
            int b0 = ty[y].w0, b1 = ty[y].w1;
            uint8_t *o = dst->rgb + (size_t)y * nw * 3;
            for (int i = 0; i < nw * 3; i++) {
                int v = (((b0 * (h0[i] >> 4)) >> 16) + ((b1 * (h1[i] >> 4)) >> 16) + 2) >> 2;
                o[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
        free(h0), free(h1);
    }
    free(tx), free(ty);
    if (failed) {
        sa_image_free(dst);
        return sa_fail(err, SA_EXIT_INTERNAL, "out of memory");
    }
    return SA_OK;
}

/* ---- logits at the network input size --------------------------------------------------------------- */

typedef struct {
    int mode, crop[2], stride[2];
} plan;

/* Whole: one pass, the stride-8 logits resized to the input. `out` is K × h × w. */
static int whole_logits(sa_model *m, const sa_image *img, float *out, sa_error *err) {
    tensor lg;
    int code = model_forward(m, img, &lg, err);
    if (code) return code;
    tensor o = {lg.c, img->h, img->w, out};
    resize_bilinear(lg, o, m->cfg.align_corners);
    return SA_OK;
}

static int slide_logits(sa_model *m, const sa_image *img, const plan *p, float *out, sa_error *err) {
    const int H = img->h, W = img->w, K = sa_model_num_classes(m);
    const int hc = p->crop[0], wc = p->crop[1], hs = p->stride[0], ws = p->stride[1];
    int hg = (H - hc + hs - 1 > 0 ? H - hc + hs - 1 : 0) / hs + 1;
    int wg = (W - wc + ws - 1 > 0 ? W - wc + ws - 1 : 0) / ws + 1;
    size_t plane = (size_t)H * W;
    float *count = calloc(plane, sizeof *count);
    int ch = hc < H ? hc : H, cw = wc < W ? wc : W;
    sa_image crop = {cw, ch, malloc((size_t)cw * ch * 3)};
    float *tmp = malloc((size_t)K * ch * cw * sizeof *tmp);
    int code = SA_OK;
    if (!count || !crop.rgb || !tmp) code = sa_fail(err, SA_EXIT_INTERNAL, "out of memory for slide inference");
    if (!code) memset(out, 0, (size_t)K * plane * sizeof *out);
    for (int i = 0; i < hg && !code; i++) {
        for (int j = 0; j < wg && !code; j++) {
            int y1 = i * hs, x1 = j * ws;
            int y2 = y1 + hc < H ? y1 + hc : H, x2 = x1 + wc < W ? x1 + wc : W;
            y1 = y2 - hc > 0 ? y2 - hc : 0;
            x1 = x2 - wc > 0 ? x2 - wc : 0;
            /* every window has the same size ch × cw (smaller than the crop only when the image is) */
            for (int y = 0; y < ch; y++)
                memcpy(crop.rgb + (size_t)y * cw * 3, img->rgb + ((size_t)(y1 + y) * W + x1) * 3, (size_t)cw * 3);
            code = whole_logits(m, &crop, tmp, err);
            if (code) break;
#pragma omp parallel for schedule(static)
            for (int k = 0; k < K; k++)
                for (int y = 0; y < ch; y++) {
                    float *dst = out + (size_t)k * plane + (size_t)(y1 + y) * W + x1;
                    const float *src = tmp + ((size_t)k * ch + y) * cw;
                    for (int x = 0; x < cw; x++) dst[x] += src[x];
                }
            for (int y = y1; y < y2; y++)
                for (int x = x1; x < x2; x++) count[(size_t)y * W + x] += 1.f;
        }
    }
    if (!code) {
#pragma omp parallel for schedule(static)
        for (int k = 0; k < K; k++)
            for (size_t q = 0; q < plane; q++) out[(size_t)k * plane + q] /= count[q];
    }
    free(count), free(crop.rgb), free(tmp);
    return code;
}

static int input_logits(sa_model *m, const sa_image *img, const plan *p, float *out, sa_error *err) {
    return p->mode == SA_MODE_SLIDE ? slide_logits(m, img, p, out, err) : whole_logits(m, img, out, err);
}

/* ---- the whole pipeline ------------------------------------------------------------------------------ */

static int check_opts(const sa_model *m, const sa_run_opts *o, plan *p, sa_error *err) {
    p->mode = resolved_mode(m, o);
    if (o->mode < SA_MODE_CONFIG || o->mode > SA_MODE_SLIDE) return sa_fail(err, SA_EXIT_USAGE, "inference: unknown mode %d", o->mode);
    if (p->mode == SA_MODE_SLIDE) {
        for (int d = 0; d < 2; d++) {
            p->crop[d] = o->crop[d] > 0 ? o->crop[d] : m->cfg.slide ? m->cfg.crop[d] : 0;
            p->stride[d] = o->stride[d] > 0 ? o->stride[d] : m->cfg.slide ? m->cfg.stride[d] : 0;
        }
        if (p->crop[0] < 1 || p->crop[1] < 1 || p->stride[0] < 1 || p->stride[1] < 1)
            return sa_fail(err, SA_EXIT_USAGE, "slide inference needs a crop and a stride (the config's test_cfg has none)");
    }
    if ((o->scale[0] > 0) != (o->scale[1] > 0))
        return sa_fail(err, SA_EXIT_USAGE, "test scale: both sides must be given (%d, %d)", o->scale[0], o->scale[1]);
    if (o->n_ratios < 0 || o->n_ratios > SA_MAX_TTA)
        return sa_fail(err, SA_EXIT_USAGE, "test-time augmentation: %d ratios (at most %d)", o->n_ratios, SA_MAX_TTA);
    for (int r = 0; r < o->n_ratios; r++)
        if (!(o->ratios[r] > 0 && o->ratios[r] <= 16))
            return sa_fail(err, SA_EXIT_USAGE, "test-time augmentation: ratio %g is not in (0, 16]", o->ratios[r]);
    return SA_OK;
}

/* The size the network sees for one ratio (ratio 0: no augmentation). */
static void network_size(const sa_image *img, const sa_run_opts *o, double ratio, int *nw, int *nh) {
    *nw = img->w, *nh = img->h;
    if (o->scale[0] > 0) {
        double r = ratio > 0 ? ratio : 1.0;
        double a = ratio > 0 ? (double)(int)(o->scale[0] * r) : o->scale[0];
        double b = ratio > 0 ? (double)(int)(o->scale[1] * r) : o->scale[1];
        infer_rescale_size(img->w, img->h, a, b, nw, nh);
    } else if (ratio > 0 && ratio != 1.0) {
        int bw = (int)(img->w * ratio + 0.5), bh = (int)(img->h * ratio + 0.5);
        infer_rescale_size(img->w, img->h, bw, bh, nw, nh);
    }
}

static void flip_rgb(sa_image *img) {
    for (int y = 0; y < img->h; y++) {
        uint8_t *row = img->rgb + (size_t)y * img->w * 3;
        for (int a = 0, b = img->w - 1; a < b; a++, b--)
            for (int c = 0; c < 3; c++) {
                uint8_t t = row[3 * a + c];
                row[3 * a + c] = row[3 * b + c];
                row[3 * b + c] = t;
            }
    }
}

static void flip_maps(float *d, int k, int h, int w) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < k * h; r++) {
        float *row = d + (size_t)r * w;
        for (int a = 0, b = w - 1; a < b; a++, b--) {
            float t = row[a];
            row[a] = row[b], row[b] = t;
        }
    }
}

/* Logits at the network input for one augmentation: resized (and flipped) image in, K × nh × nw out
 * (flipped back). */
static int aug_logits(sa_model *m, const sa_image *img, const sa_run_opts *o, const plan *p, double ratio, int flip,
                      float **out, int *nw, int *nh, sa_error *err) {
    *out = NULL;
    network_size(img, o, ratio, nw, nh);
    int64_t limit = o->max_pixels > 0 ? o->max_pixels : SA_DEFAULT_MAX_PIXELS;
    if (*nw < 1 || *nh < 1 || (int64_t)*nw * *nh > limit)
        return sa_fail(err, SA_EXIT_INPUT, "%dx%d image resized to %dx%d: outside 1 .. %lld pixels (--max-pixels)", img->w,
                       img->h, *nw, *nh, (long long)limit);
    sa_image net = *img;
    int own = 0, code = SA_OK;
    if (*nw != img->w || *nh != img->h || flip) {
        if ((code = infer_resize_u8(img, *nw, *nh, &net, err))) return code;
        own = 1;
        if (flip) flip_rgb(&net);
    }
    int K = sa_model_num_classes(m);
    float *lg = malloc((size_t)K * *nw * *nh * sizeof *lg);
    if (!lg) code = sa_fail(err, SA_EXIT_INTERNAL, "out of memory for %dx%d logits", *nw, *nh);
    if (!code) code = input_logits(m, &net, p, lg, err);
    if (own) free(net.rgb);
    if (code) {
        free(lg);
        return code;
    }
    if (flip) flip_maps(lg, K, *nh, *nw);
    *out = lg;
    return SA_OK;
}

int infer_predict(sa_model *m, const sa_image *img, const sa_run_opts *o, sa_labels *out, sa_logits *logits,
                  sa_error *err) {
    static const sa_run_opts defaults = {0};
    if (!o) o = &defaults;
    plan p = {0};
    int code = check_opts(m, o, &p, err);
    if (code) return code;
    const int K = sa_model_num_classes(m), H = img->h, W = img->w;
    const size_t plane = (size_t)H * W;
    out->w = W, out->h = H;
    out->id = malloc(plane);
    if (!out->id) return sa_fail(err, SA_EXIT_INTERNAL, "out of memory for a %dx%d label map", W, H);

    if (o->n_ratios == 0 && !o->flip) { /* one pass: argmax straight from the input-size logits */
        float *lg;
        int nw, nh;
        if ((code = aug_logits(m, img, o, &p, 0, 0, &lg, &nw, &nh, err))) return code;
        tensor t = {K, nh, nw, lg};
        resize_argmax(t, H, W, m->cfg.align_corners, out->id, NULL);
        if (logits) logits->k = K, logits->h = nh, logits->w = nw, logits->data = lg;
        else free(lg);
        return SA_OK;
    }

    double one = 1.0;
    const double *ratios = o->n_ratios ? o->ratios : &one;
    int n_ratios = o->n_ratios ? o->n_ratios : 1, n_aug = 0;
    float *acc = calloc((size_t)K * plane, sizeof *acc), *full = malloc((size_t)K * plane * sizeof *full);
    if (!acc || !full) code = sa_fail(err, SA_EXIT_INTERNAL, "out of memory for test-time augmentation");
    for (int r = 0; r < n_ratios && !code; r++) {
        for (int f = 0; f <= (o->flip ? 1 : 0) && !code; f++) {
            float *lg;
            int nw, nh;
            if ((code = aug_logits(m, img, o, &p, ratios[r], f, &lg, &nw, &nh, err))) break;
            tensor in = {K, nh, nw, lg}, to = {K, H, W, full};
            if (nw == W && nh == H) memcpy(full, lg, (size_t)K * plane * sizeof *full);
            else resize_bilinear(in, to, m->cfg.align_corners);
            free(lg);
#pragma omp parallel for schedule(static)
            for (size_t q = 0; q < plane; q++) {
                float mx = -FLT_MAX, sum = 0;
                for (int k = 0; k < K; k++) mx = fmaxf(mx, full[(size_t)k * plane + q]);
                for (int k = 0; k < K; k++) {
                    float e = expf(full[(size_t)k * plane + q] - mx);
                    full[(size_t)k * plane + q] = e;
                    sum += e;
                }
                for (int k = 0; k < K; k++) acc[(size_t)k * plane + q] += full[(size_t)k * plane + q] / sum;
            }
            n_aug++;
        }
    }
    free(full);
    if (code) {
        free(acc);
        return code;
    }
    const float n = (float)n_aug;
#pragma omp parallel for schedule(static)
    for (size_t q = 0; q < plane; q++) {
        float best = -FLT_MAX;
        int arg = 0;
        for (int k = 0; k < K; k++) {
            float v = acc[(size_t)k * plane + q] /= n;
            if (v > best) best = v, arg = k;
        }
        out->id[q] = (uint8_t)arg;
    }
    if (logits) logits->k = K, logits->h = H, logits->w = W, logits->data = acc;
    else free(acc);
    return SA_OK;
}
