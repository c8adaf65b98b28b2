# Sums cubecl's profile lines ("| <duration> | <kernel name>") of a log by kernel name and
# prints the largest totals, with how often each ran.
import re, sys, collections
unit = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}
total, count = collections.Counter(), collections.Counter()
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"\| ([0-9.]+)(ns|µs|us|ms|s)\s*\| (.*)", line.strip())
    if not m:
        continue
    name = re.sub(r"\s+", " ", m.group(3))[:110]
    total[name] += float(m.group(1)) * unit[m.group(2)]
    count[name] += 1
print(f"{sum(total.values()):.1f} ms in {sum(count.values())} kernels")
for name, ms in total.most_common(int(sys.argv[2]) if len(sys.argv) > 2 else 25):
    print(f"{ms:9.2f} ms {count[name]:6d}x  {name}")
