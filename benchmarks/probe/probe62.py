"""probe62: PSNR of the sparsified Wan2.1-1.3B-sized step against the dense one at 720x1280x81
(neighborhood and radial), the ``foveal bench diffusion`` notes without the timing (a 720p dense
step takes 2.5 s)."""
import torch

from tasks.bench.suites.diffusion import GPU_CASES, RADIAL_DECAY, WAN_1_3B, _psnr, _Switch

from diffusers import WanTransformer3DModel

torch.manual_seed(0)
with torch.device("cuda"):
    model = WanTransformer3DModel(**WAN_1_3B).to(torch.bfloat16).eval()
name, latent, window = GPU_CASES[1]
gen = torch.Generator(device="cuda").manual_seed(0)
inputs = dict(hidden_states=torch.randn(1, 16, *latent, device="cuda", dtype=torch.bfloat16, generator=gen),
              encoder_hidden_states=torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16, generator=gen),
              timestep=torch.tensor([500], device="cuda"))
switch = _Switch(model)
dense = switch.run(("dense",), inputs)
na = switch.run(("neighborhood", window), inputs)
radial = switch.run(("radial", 128), inputs)
print(f"{name}: PSNR neighborhood {window} vs dense {_psnr(na, dense):.2f} dB, "
      f"radial (decay {RADIAL_DECAY}) vs dense {_psnr(radial, dense):.2f} dB")
