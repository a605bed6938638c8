"""The same calls timed with two checkouts of torchpalette, in one run (alternating child
processes, best of 2 rounds of a median of 9): palette + exact apply, reduce_colors with the
bins and refined assignments at k=16 on the four benchmark photos, and dominant colours of a
12.8 MP image. Made to check that a reorganisation (issue 11) changes no speed.

Usage: ``python benchmarks/bench_before_after.py BEFORE_DIR AFTER_DIR`` where each directory
holds a checkout (e.g. ``git worktree add /tmp/before <commit>``); needs scikit-image.
"""
import subprocess, sys, json
CHILD = r'''
import sys, time, statistics, warnings, json
warnings.simplefilter("ignore")
import torch, torch.nn.functional as F
import torchpalette as tp
from skimage import data
torch.set_num_threads(2)
def down(img, m=100_000):
    h, w = img.shape[-2:]; s = (m / (h * w)) ** 0.5
    return F.interpolate(img[None].float(), size=(int(h*s), int(w*s)), mode="area")[0].round().to(torch.uint8)
photos = [down(tp.read_image(tp.io.SAMPLE))] + [down(torch.from_numpy(getattr(data, n)()).permute(2,0,1).contiguous()) for n in ("coffee","chelsea","rocket")]
def t(fn, rep=9):
    fn(); ts = []
    for _ in range(rep):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3
r = {}
r["palette+apply k16"] = sum(t(lambda: tp.apply_palette(p, tp.palette(p, 16).colors)) for p in photos) / 4
r["reduce bins k16"] = sum(t(lambda: tp.reduce_colors(p, 16, assign="bins")) for p in photos) / 4
r["reduce refined k16"] = sum(t(lambda: tp.reduce_colors(p, 16, assign="refined")) for p in photos) / 4
big = F.interpolate(tp.read_image(tp.io.SAMPLE)[None].float(), size=(3584, 3584), mode="bilinear").round().clamp(0,255).to(torch.uint8)[0]
r["dominant 12.8MP"] = t(lambda: tp.dominant_colors(big, 32), 7)
print(json.dumps(r))
'''
res = {}
for rnd in range(2):
    for name, d in (("before", sys.argv[1]), ("after", sys.argv[2])):
        out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd="/tmp", env={"PYTHONPATH": d, "PATH": "/usr/bin:/bin"})
        r = json.loads(out.stdout.strip().splitlines()[-1])
        for k, v in r.items():
            res.setdefault(k, {}).setdefault(name, []).append(v)
print(f"{'measure':22s} {'before ms':>10s} {'after ms':>10s} {'after/before':>12s}")
for k, v in res.items():
    b, a = min(v["before"]), min(v["after"])
    print(f"{k:22s} {b:10.1f} {a:10.1f} {a/b:12.2f}")
