"""foveal.zoo: timm models built on foveal.ops, and diffusers hooks."""
