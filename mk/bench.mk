# Benchmarks (issues 4 and 8). `make bench` (in the Makefile) runs scripts/bench.sh: segattn against PyTorch
# and ONNX Runtime on R18-d8 360x480 and R101-d8 512x1024. The targets here are its shorter cousins.
.PHONY: bench-quick bench-modules efficiency

# R18 row only, two runs per engine.
bench-quick: segattn
	bash scripts/bench.sh --quick

# Every bare context module at the efficiency papers' input (docs/efficiency.md).
bench-modules: segattn
	./segattn bench --all --input 1x512x128x128 -t 2

# The two tables of docs/efficiency.md: 1x512x128x128 and the Cityscapes-size 1x512x128x256.
efficiency: segattn
	./segattn bench --all --input 1x512x128x128 -t 2 -r 3
	./segattn bench --all --input 1x512x128x256 -t 2 -r 3
