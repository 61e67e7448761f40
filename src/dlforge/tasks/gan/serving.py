"""The GAN's serving side (torch-free): seeds or latents [+ classes] → images."""

from __future__ import annotations

from typing import Any

from dlforge.taskapi import Codec, Serving


class GanServing(Serving):
    name = "gan"

    def codec(self, package: Any) -> Codec:
        from dlforge.tasks.gan.codec import GeneratorCodec

        return GeneratorCodec(package.manifest)


SERVING = GanServing()
