/* stb_image and stb_image_write compiled from the system's headers (libstb-dev), for the fuzz targets,
 * so that the decoders are instrumented like our own code. The program itself links -lstb. */
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
