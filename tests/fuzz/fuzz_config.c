/* libFuzzer target: the JSON model description (config_parse), every field type- and range-checked. */
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    model_cfg cfg;
    sa_error err = {0};
    if (config_parse((const char *)data, size, "fuzz.json", &cfg, &err) == SA_OK) {
        /* What the model builder relies on after a successful parse. */
        if (cfg.head.n_in < 1 || cfg.head.n_in > 2 || cfg.head.num_classes < 1 || cfg.head.num_classes > 256) abort();
        if (cfg.n_classes && cfg.n_classes != cfg.head.num_classes) abort();
        if (cfg.n_palette && cfg.n_palette < cfg.head.num_classes) abort();
        for (int i = 0; i < cfg.n_weights; i++)
            if (!cfg.weights[i]) abort();
        config_free(&cfg);
    } else if (!err.code) {
        abort();
    }
    return 0;
}
