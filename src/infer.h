/* Inference modes on top of one forward pass: whole image, sliding window, test scale and test-time
 * augmentation (SPEC §11-12). Internal to the library. */
#ifndef SA_INFER_H
#define SA_INFER_H
#include "model.h"

/* One forward pass of the network on `img` (replanning the arena when the size changes). *logits is the
 * head output [K, h/8, w/8], living in the model's arena until the next pass. */
int model_forward(sa_model *m, const sa_image *img, tensor *logits, sa_error *err);

/* Whether the options ask for anything beyond one whole-image pass at the image's own size. */
int infer_is_plain(const sa_model *m, const sa_run_opts *opts);
/* sa_predict for the other cases: see segattn.h. */
int infer_predict(sa_model *m, const sa_image *img, const sa_run_opts *opts, sa_labels *out, sa_logits *logits,
                  sa_error *err);

/* mmcv's keep-ratio rescale: the size an image of w×h gets when fitted into the (long, short) box
 * scale[0..1] (either order): f = min(long / max(w, h), short / min(w, h)), size int(dim·f + 0.5). */
void infer_rescale_size(int w, int h, double box_a, double box_b, int *nw, int *nh);
/* cv2.resize(INTER_LINEAR) on uint8 RGB, bit for bit: 11-bit fixed-point weights, the rounding of
 * OpenCV's linear resize, and cv2's switch to a 2×2 box average for an exact halving. */
int infer_resize_u8(const sa_image *src, int nw, int nh, sa_image *dst, sa_error *err);

#endif
