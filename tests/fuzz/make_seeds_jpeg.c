/* Writes the JPEG seeds of the image fuzz corpus with stb_image_write (cc make_seeds_jpeg.c -lstb -lm;
 * run from the repository root). */
#include <stdio.h>
#include <stb/stb_image_write.h>

int main(void) {
    unsigned char rgb[13 * 9 * 3], gray[13 * 9];
    for (int y = 0; y < 9; y++)
        for (int x = 0; x < 13; x++) {
            for (int c = 0; c < 3; c++) rgb[(y * 13 + x) * 3 + c] = (unsigned char)(x * 19 + y * 29 * (c + 1));
            gray[y * 13 + x] = (unsigned char)(x * 17 + y * 11);
        }
    int ok = stbi_write_jpg("tests/fuzz/seeds/image/rgb_q90.jpg", 13, 9, 3, rgb, 90) &&
             stbi_write_jpg("tests/fuzz/seeds/image/rgb_q20.jpg", 13, 9, 3, rgb, 20) &&
             stbi_write_jpg("tests/fuzz/seeds/image/gray.jpg", 13, 9, 1, gray, 75) &&
             stbi_write_tga("tests/fuzz/seeds/image/rgb.tga", 13, 9, 3, rgb);
    return ok ? 0 : 1;
}
