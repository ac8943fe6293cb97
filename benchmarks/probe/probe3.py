"""Probe (session 2, part 3): where VAN-b0's training step spends its time, kernels on vs off."""
import torch, timm, zoo  # noqa: F401
from triton.testing import do_bench
from torch.profiler import profile, ProfilerActivity

m = timm.create_model("van_b0").cuda().to(memory_format=torch.channels_last)
x = torch.randn(128, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
y = torch.randint(0, 1000, (128,), device="cuda")
opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)

def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(m(x), y)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

for on in (True, False):
    m.set_use_kernels(on)
    for _ in range(3): step()
    torch.cuda.synchronize()
    t = do_bench(step, warmup=100, rep=400)
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        step(); step(); torch.cuda.synchronize()
    evs = sorted(p.key_averages(), key=lambda e: -getattr(e, 'self_device_time_total', 0))
    tot = sum(getattr(e, 'self_device_time_total', 0) for e in evs) / 2 / 1e3
    print(f"== van_b0 train use_kernels={on}: step {t:.2f} ms, kernels {tot:.2f} ms/step", flush=True)
    for e in evs[:14]:
        print(f"   {getattr(e, 'self_device_time_total', 0) / 2 / 1e3:7.3f} ms x{e.count // 2:<4d} {e.key[:100]}", flush=True)
