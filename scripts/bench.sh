#!/usr/bin/env bash
# segattn against its peers (PyTorch CPU, ONNX Runtime CPU) on the same models and sizes, in one run.
#
# usage: scripts/bench.sh [--quick] [--heads fcn,ann,...] [--runs N] [--threads N] [--rows r18,r101]
#                         [--scaling-time S] [--out FILE]
#
#   --quick        R18 row only, 2 runs, 5 s of scaling runs
#   --heads LIST   comma-separated heads (default: fcn,ann,ccnet,isanet,eanet,nonlocal)
#   --runs N       timed runs per engine after one warm-up (default 5); median and minimum are reported
#   --threads N    threads for every engine (default 2)
#   --rows LIST    r18 (CamVid R18-d8, 128-ch heads, 360x480) and/or r101 (R101-d8, mmseg's 512-ch heads,
#                  512x1024); default both
#   --scaling-time S  seconds of alternating 1-thread / N-thread segattn runs behind the thread-scaling
#                  column, per head (default 40). They are cut into one window per head of the row, and
#                  every head gets one window after each head's timed runs, so that a head's windows are
#                  spread over the whole row: a neighbour busy for minutes then spoils some of them, not all
#                  (at least one pair per window)
#   --out FILE     also write the report (markdown) to FILE
#
# Every engine runs random weights of the same architecture: segattn with `bench --random-weights`, the
# peers through ../shared/reference/{torch_cpu.py, export_onnx.py, ort_cpu.js} (not copied here). A peer
# that is not installed is reported as such and the rest carries on. Scratch files (.onnx, results) go to
# $SEGATTN_BENCH_DIR (default /tmp/segattn-bench), the ONNX Runtime npm install to
# $SEGATTN_BENCH_CACHE/ort (default ~/.cache/segattn-bench/ort): nothing is written inside the repository.
# $SEGATTN_BENCH_REF overrides where the peer scripts are (default ../shared/reference).
# GFLOP/s counts direct-convolution MACs x 2 (as `segattn info`); "% peak" is against the FMA peak that
# scripts/fma_peak.c measures on this machine with the same thread count.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD

HEADS=fcn,ann,ccnet,isanet,eanet,nonlocal
RUNS=5
THREADS=2
ROWS=r18,r101
SCALING_TIME=40
OUT=
QUICK=0
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1; ROWS=r18; RUNS=2; SCALING_TIME=5 ;;
    --heads) HEADS=$2; shift ;;
    --runs) RUNS=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    --rows) ROWS=$2; shift ;;
    --scaling-time) SCALING_TIME=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$RUNS$THREADS$SCALING_TIME" in *[!0-9]*) echo "bench.sh: --runs, --threads and --scaling-time take counts" >&2; exit 2 ;; esac

WORK=${SEGATTN_BENCH_DIR:-/tmp/segattn-bench}
CACHE=${SEGATTN_BENCH_CACHE:-$HOME/.cache/segattn-bench}
REF=${SEGATTN_BENCH_REF:-$ROOT/../shared/reference}
PY=/usr/bin/python3
ORT_VERSION=1.30.0
mkdir -p "$WORK"
RESULTS=$WORK/results.$$.jsonl
: > "$RESULTS"
note() { echo "bench.sh: $*" >&2; }
record() { echo "$1" >> "$RESULTS"; }   # one JSON object per line

[ -x ./segattn ] || make -s segattn || { note "cannot build segattn"; exit 1; }

# --- peers -------------------------------------------------------------------------------------------------
TORCH_OK=0 ORT_OK=0 TORCH_WHY= ORT_WHY=
if [ ! -d "$REF" ]; then
    TORCH_WHY="$REF not present"; ORT_WHY=$TORCH_WHY
else
    if [ ! -x $PY ] || ! $PY -c 'import torch' 2>/dev/null; then TORCH_WHY="torch not installed for $PY"
    else TORCH_OK=1; TORCH_VER=$($PY -c 'import torch; print(torch.__version__)'); fi
    if ! command -v node >/dev/null; then ORT_WHY="node not installed"
    elif [ $TORCH_OK = 0 ]; then ORT_WHY="the ONNX export needs torch ($TORCH_WHY)"
    else
        if [ ! -f "$CACHE/ort/node_modules/onnxruntime-node/package.json" ]; then
            note "installing onnxruntime-node@$ORT_VERSION into $CACHE/ort"
            mkdir -p "$CACHE/ort"
            [ -f "$CACHE/ort/package.json" ] || echo '{"name": "segattn-bench-ort", "private": true}' > "$CACHE/ort/package.json"
            (cd "$CACHE/ort" && npm install --ignore-scripts --no-audit --no-fund "onnxruntime-node@$ORT_VERSION" >&2) ||
                note "npm install onnxruntime-node@$ORT_VERSION failed"
        fi
        if [ -f "$CACHE/ort/node_modules/onnxruntime-node/package.json" ]; then
            ORT_OK=1
            ORT_VER=$(node -p "require('$CACHE/ort/node_modules/onnxruntime-node/package.json').version")
        else ORT_WHY="onnxruntime-node not installed (npm install failed)"; fi
    fi
fi
[ $TORCH_OK = 1 ] && note "peer PyTorch $TORCH_VER" || note "peer PyTorch unavailable: $TORCH_WHY"
[ $ORT_OK = 1 ] && note "peer ONNX Runtime $ORT_VER" || note "peer ONNX Runtime unavailable: $ORT_WHY"

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

# --- FMA peak ----------------------------------------------------------------------------------------------
PEAK=
if cc -O2 -mavx2 -mfma -fopenmp scripts/fma_peak.c -o "$WORK/fma_peak" 2>/dev/null; then
    PEAK=$("$WORK/fma_peak" "$THREADS" | $PY -c 'import json,sys; print(json.load(sys.stdin)["fma_peak_gflops"])')
fi
[ -n "$PEAK" ] || { note "FMA peak not measured"; PEAK=0; }

# --- runs --------------------------------------------------------------------------------------------------
run_segattn() { # inside run_row's head loop: the timed runs, as many as the peers get
    local out
    note "$row $head: segattn, $THREADS thread(s)"
    out=$(timeout 3600 ./segattn bench --random-weights --json -c "$cfg" --size "${H}x$W" -r "$RUNS" -t "$THREADS" 2>>"$WORK/errors.log" | tail -1)
    [ -n "$out" ] || out="{\"error\": \"segattn bench -t $THREADS failed (see $WORK/errors.log)\"}"
    record "{\"row\": \"$row\", \"head\": \"$head\", \"engine\": \"segattn\", \"r\": $out}"
}
scaling_window() { # HEAD SECONDS: one window of the thread-scaling runs. Each N-thread run is followed by one
    # on 1 thread in the same process, so that both see the same load.
    local head=$1 cfg=${pattern//HEAD/$1} out
    note "$row $head: segattn, $THREADS thread(s) alternating with 1, $2 s"
    out=$(timeout 3600 ./segattn bench --random-weights --json --scaling --min-time "$2" -c "$cfg" --size "${H}x$W" -r 1 -t "$THREADS" 2>>"$WORK/errors.log" | tail -1)
    [ -n "$out" ] || out="{\"error\": \"segattn bench --scaling failed (see $WORK/errors.log)\"}"
    record "{\"row\": \"$row\", \"head\": \"$head\", \"engine\": \"segattn_scaling\", \"r\": $out}"
}
run_row() { # ROW DEPTH H W CONFIG_PATTERN
    local row=$1 depth=$2 H=$3 W=$4 pattern=$5 onnxdir=$WORK/r$2_$3x$4 head
    if [ $ORT_OK = 1 ]; then
        local missing=
        for head in ${HEADS//,/ }; do [ -f "$onnxdir/r${depth}_$head.onnx" ] || missing=$missing,$head; done
        if [ -n "$missing" ]; then
            note "$row: exporting ${missing#,} to ONNX ($onnxdir)"
            $PY "$REF/export_onnx.py" "$depth" "$H" "$W" "$onnxdir" "${missing#,}" 2>>"$WORK/export.log" |
                while read -r line; do record "{\"row\": \"$row\", \"engine\": \"export\", \"r\": $line}"; done
        fi
    fi
    local heads=(${HEADS//,/ }) window
    window=$(awk -v s="$SCALING_TIME" -v n=${#heads[@]} 'BEGIN { printf "%.2f", s / n }')
    for head in "${heads[@]}"; do
        local cfg=${pattern//HEAD/$head} out
        run_segattn
        if [ "$THREADS" -gt 1 ]; then
            local other
            for other in "${heads[@]}"; do scaling_window "$other" "$window"; done
        fi
        if [ $TORCH_OK = 1 ]; then
            note "$row $head: torch"
            out=$(timeout 3600 $PY "$REF/torch_cpu.py" "$depth" "$head" "$H" "$W" "$THREADS" "$RUNS" 2>>"$WORK/errors.log" | tail -1)
            [ -n "$out" ] || out="{\"error\": \"torch_cpu.py failed (see $WORK/errors.log)\"}"
            record "{\"row\": \"$row\", \"head\": \"$head\", \"engine\": \"torch\", \"r\": $out}"
        fi
        if [ $ORT_OK = 1 ]; then
            if [ -f "$onnxdir/r${depth}_$head.onnx" ]; then
                note "$row $head: onnxruntime"
                out=$(NODE_PATH=$CACHE/ort/node_modules timeout 3600 node "$REF/ort_cpu.js" "$onnxdir/r${depth}_$head.onnx" "$H" "$W" "$THREADS" "$RUNS" 2>>"$WORK/errors.log" | tail -1)
                [ -n "$out" ] || out="{\"error\": \"ort_cpu.js failed (see $WORK/errors.log)\"}"
            else
                out="{\"error\": \"no ONNX export\"}"
            fi
            record "{\"row\": \"$row\", \"head\": \"$head\", \"engine\": \"ort\", \"r\": $out}"
        fi
    done
}
for row in ${ROWS//,/ }; do
    case $row in
    r18) run_row "R18-d8 360x480" 18 360 480 "configs/camvid_r18-d8_HEAD.json" ;;
    r101) run_row "R101-d8 512x1024" 101 512 1024 "configs/bench/r101-d8_HEAD.json" ;;
    *) note "unknown row '$row' (r18, r101)" ;;
    esac
done

# The peak again after the runs: the machine may have been busier at the start; the higher one counts.
if [ -x "$WORK/fma_peak" ]; then
    PEAK=$("$WORK/fma_peak" "$THREADS" | $PY -c 'import json,sys; p=json.load(sys.stdin)["fma_peak_gflops"]; print(max(p, float(sys.argv[1])))' "$PEAK")
fi

# --- report ------------------------------------------------------------------------------------------------
CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
CORES=$(nproc)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src 2>/dev/null || echo "+uncommitted src changes")
CMD="scripts/bench.sh"
[ $QUICK = 1 ] && CMD="$CMD --quick"
CMD="$CMD --heads $HEADS --runs $RUNS --threads $THREADS --rows $ROWS --scaling-time $SCALING_TIME"
REPORT=$($PY - "$RESULTS" "$PEAK" "$CPU" "$CORES" "$THREADS" "$RUNS" "$COMMIT" "$CMD" \
    "${TORCH_VER:-unavailable: $TORCH_WHY}" "${ORT_VER:-unavailable: $ORT_WHY}" "$(cut -d' ' -f1-3 /proc/loadavg)" "$LOAD0" <<'EOF'
import json, sys
path, peak, cpu, cores, threads, runs, commit, cmd, torch_v, ort_v, load, load0 = sys.argv[1:]
peak = float(peak)
res, exports = {}, {}
for line in open(path):
    o = json.loads(line)
    if o["engine"] == "export":
        exports[(o["row"], o["r"]["head"])] = o["r"]
    elif o["engine"] == "segattn_scaling":  # one record per window: pooled below
        res.setdefault((o["row"], o["head"]), {}).setdefault("windows", []).append(o["r"])
    else:
        res.setdefault((o["row"], o["head"]), {})[o["engine"]] = o["r"]
print(f"machine: {cpu}, {cores} cores; {threads} threads per engine; median of {runs} runs after one warm-up")
print(f"segattn {commit}; PyTorch {torch_v}; ONNX Runtime (onnxruntime-node) {ort_v}")
print(f"measured FMA peak ({threads} threads, scripts/fma_peak.c): {peak:.1f} GFLOP/s; load average at the start / end: {load0} / {load}")
print(f"command: {cmd}\n")
print(f"| model | head | segattn s median (min) | torch s | ORT s | segattn / fastest peer (min) | GFLOP | GFLOP/s (min) | % FMA peak | peak RSS MiB segattn / torch / ORT | segattn 1 -> {threads} threads: min over min (1-thread / {threads}-thread s); pairs median (pairs); windows (count) |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
notes = []
for (row, head), e in res.items():
    def cell(name):
        r = e.get(name)
        if r is None: return "n/a", None
        if "error" in r:
            why = r["error"]
            if name == "ort" and why == "no ONNX export":
                ex = exports.get((row, head), {})
                why = "ONNX export failed: " + ex.get("error", "no .onnx file")
            notes.append(f"{row} {head} {name}: {why}")
            return "failed", None
        return f"{r['median_s']:.3f} ({r['min_s']:.3f})", r["min_s"]
    s_txt, s = cell("segattn")
    t_txt, t = cell("torch")
    o_txt, o = cell("ort")
    peers = [x for x in (t, o) if x is not None]
    ratio = f"{s / min(peers):.2f}x" if s is not None and peers else "-"
    sg = e.get("segattn", {})
    gflop = sg.get("gflop")
    gflops = round(float(gflop) / s, 1) if gflop and s else None  # gflop is already 2 x MACs
    pct = f"{100 * gflops / peak:.0f} %" if gflops and peak > 0 else "-"
    rss = " / ".join(str(e.get(k, {}).get("peak_rss_mb", "-")) for k in ("segattn", "torch", "ort"))
    # The scaling windows pooled: the minima over all of them, the median over all their pairs.
    wins = [w for w in e.get("windows", []) if "scaling" in w]
    for w in e.get("windows", []):
        if "error" in w: notes.append(f"{row} {head} scaling window: {w['error']}")
    scaling = "-"
    if wins:
        one_min, n_min = min(w["one_thread"]["min_s"] for w in wins), min(w["min_s"] for w in wins)
        pairs = sorted(p for w in wins for p in w["scaling_pairs"])
        each = sorted(w["scaling"] for w in wins)
        scaling = (f"{one_min / n_min:.2f}x ({one_min:.3f} / {n_min:.3f} s); pairs {pairs[len(pairs) // 2]:.2f}x "
                   f"({len(pairs)}); windows {each[0]:.2f}-{each[-1]:.2f}x ({len(wins)})")
        # The same binary on the same thread count, so the windows' minimum and the timed runs' should agree;
        # when it is far slower, other load hit every window (a vCPU taken for minutes): say so.
        if s and n_min > 1.2 * s:
            scaling += " (disturbed)"
            notes.append(f"{row} {head}: the {threads}-thread minimum of the scaling windows, {n_min:.3f} s, is "
                         f"{n_min / s:.2f}x that of the timed runs ({s:.3f} s): other load slowed the scaling runs, "
                         f"so their speed-up says more about that load than about segattn")
    print(f"| {row} | {head} | {s_txt} | {t_txt} | {o_txt} | {ratio} | {gflop if gflop is not None else '-'} | "
          f"{gflops if gflops is not None else '-'} | {pct} | {rss} | {scaling} |")
print("\nTimes: median (min) wall seconds of whole predictions. segattn / fastest peer compares the minima (< 1: segattn "
      "is faster); the minimum is the least disturbed by other load. GFLOP = 2 x direct-convolution MACs of segattn's "
      "network (`segattn info`); GFLOP/s (at segattn's minimum time) and % FMA peak are segattn's, and can exceed "
      "100 % because segattn's Winograd 3x3 convolutions do fewer multiplications than the direct count. "
      f"The last column is segattn's minimum on 1 thread over its minimum on {threads} (min over min), from separate "
      f"segattn processes (windows) whose runs alternate between 1 and {threads} threads, spread over the row: one "
      "window per head of the row, taken after each head's timed runs. Then the median of the speed-ups of all "
      f"the ({threads}-thread, 1-thread) pairs and how many pairs ran, and the range of the windows' own min over "
      "min and how many windows ran.")
for n in notes: print(f"- {n}")
EOF
)
echo "$REPORT"
[ -n "$OUT" ] && echo "$REPORT" > "$OUT"
rm -f "$RESULTS"
