#!/usr/bin/env python3
"""Writes the image seeds of the fuzz corpus (tests/fuzz/seeds/image) that need no image library: PNG in its
colour types, bit depths and Adam7 interlacing, PPM/PGM, BMP and an uncompressed-code GIF. The JPEG seeds
are written by make_seeds_jpeg.c (stb_image_write). Run from the repository root."""
import struct, zlib

OUT = "tests/fuzz/seeds/image/"
W, H = 7, 5
def pixel(x, y): return ((x * 37) % 256, (y * 51) % 256, ((x + y) * 23) % 256)

def png(name, color_type, depth, rows_fn, interlace=0, plte=None, trns=None):
    def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    raw = b""
    if interlace:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        for x0, y0, dx, dy in passes:
            xs = list(range(x0, W, dx)); ys = list(range(y0, H, dy))
            if not xs or not ys: continue
            for y in ys: raw += b"\x00" + rows_fn(y, xs)
    else:
        for y in range(H): raw += bytes([y % 5 if depth == 8 else 0]) * 0 + b"\x00" + rows_fn(y, list(range(W)))
    ihdr = struct.pack(">IIBBBBB", W, H, depth, color_type, 0, 0, interlace)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    if plte: data += chunk(b"PLTE", plte)
    if trns: data += chunk(b"tRNS", trns)
    data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    open(OUT + name, "wb").write(data)

rgb8 = lambda y, xs: b"".join(bytes(pixel(x, y)) for x in xs)
rgb16 = lambda y, xs: b"".join(struct.pack(">3H", *(v * 257 for v in pixel(x, y))) for x in xs)
rgba8 = lambda y, xs: b"".join(bytes(pixel(x, y) + ((x * 40) % 256,)) for x in xs)
gray8 = lambda y, xs: bytes(pixel(x, y)[0] for x in xs)
def packed(bits):
    def f(y, xs):
        vals = [(x + y) % (1 << bits) for x in xs]; out = bytearray(); acc = 0; n = 0
        for v in vals:
            acc = acc << bits | v; n += bits
            if n == 8: out.append(acc); acc = 0; n = 0
        if n: out.append(acc << (8 - n))
        return bytes(out)
    return f
png("rgb8.png", 2, 8, rgb8)
png("rgb16.png", 2, 16, rgb16)
png("rgba8.png", 6, 8, rgba8)
png("gray8.png", 0, 8, gray8)
png("gray1.png", 0, 1, packed(1))
png("pal4.png", 3, 4, packed(4), plte=bytes(range(48)), trns=b"\x00\x80")
png("rgb8_adam7.png", 2, 8, rgb8, interlace=1)

open(OUT + "rgb.ppm", "wb").write(b"P6\n%d %d\n255\n" % (W, H) + b"".join(rgb8(y, range(W)) for y in range(H)))
open(OUT + "gray.pgm", "wb").write(b"P5 %d %d 255\n" % (W, H) + b"".join(gray8(y, range(W)) for y in range(H)))
row = lambda y: b"".join(bytes(pixel(x, y)[::-1]) for x in range(W)) + b"\x00" * ((4 - W * 3 % 4) % 4)
pix = b"".join(row(y) for y in reversed(range(H)))
open(OUT + "rgb24.bmp", "wb").write(b"BM" + struct.pack("<IHHI", 54 + len(pix), 0, 0, 54) +
                                    struct.pack("<IiiHHIIiiII", 40, W, H, 1, 24, 0, len(pix), 2835, 2835, 0, 0) + pix)
# GIF: 4-colour table, LZW with a clear code before every pixel so no dictionary is ever built.
codes = []
for y in range(H):
    for x in range(W): codes += [4, (x + y) % 4]
codes.append(5)
bits = acc = 0; stream = bytearray()
for c in codes:
    acc |= c << bits; bits += 3
    while bits >= 8: stream.append(acc & 255); acc >>= 8; bits -= 8
if bits: stream.append(acc)
blocks = b"".join(bytes([len(stream[i:i + 255])]) + bytes(stream[i:i + 255]) for i in range(0, len(stream), 255))
gif = (b"GIF89a" + struct.pack("<HHBBB", W, H, 0x81, 0, 0) + bytes([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]) +
       b"," + struct.pack("<HHHHB", 0, 0, W, H, 0) + b"\x02" + blocks + b"\x00;")
open(OUT + "pal.gif", "wb").write(gif)
