"""Probe (session 2, part 4): CPU-side profile of one BRA forward+backward (where the eager time goes)."""
import torch
from torch.profiler import profile, ProfilerActivity

from bra_case import fb  # the script's folder is on sys.path

for _ in range(5):
    fb()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CPU], with_stack=True) as p:
    for _ in range(10):
        fb()
    torch.cuda.synchronize()
rows = sorted(p.key_averages(), key=lambda e: -e.self_cpu_time_total)[:30]
for e in rows:
    print(f"{e.self_cpu_time_total / 10 / 1e3:8.3f} ms self  {e.cpu_time_total / 10 / 1e3:8.3f} ms total  x{e.count // 10:<4d} {e.key[:110]}")
