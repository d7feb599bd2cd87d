"""Who trained a model: the trainer's identity a signed manifest binds (its lineage).

One of three kinds, as the model definition names them:

* ``builtin``: the built-in trainer, by name;
* ``command``: the argv the local backend ran (as defined, before ``{input}``/``{output}`` were substituted) and
  the SHA-256 of every file the definition lists as the trainer's code, hashed when the training started;
* ``image``: the OCI image by digest, with the command and arguments the Job ran.

Part of the manifest's signed bytes from manifest schema v2 on; a v1 manifest carries only the trainer's name.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_HEX64 = r"^[0-9a-f]{64}$"
_IMAGE_DIGEST = r"^sha256:[0-9a-f]{64}$"

Argument = Annotated[str, Field(max_length=4096)]


class CodeFileDigest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(min_length=1, max_length=4096, description="As the definition lists it.")
    sha256: str = Field(pattern=_HEX64)


class TrainerIdentity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["builtin", "command", "image"]
    name: str | None = Field(default=None, max_length=200, description="builtin: the trainer's name.")
    contract: str | None = Field(
        default=None, max_length=100, description="command and image: the training contract they follow."
    )
    argv: list[Argument] = Field(
        default_factory=list, max_length=128, description="command: argv; image: command + args."
    )
    code_files: list[CodeFileDigest] = Field(default_factory=list, max_length=64)
    image: str | None = Field(default=None, max_length=512)
    image_digest: str | None = Field(default=None, pattern=_IMAGE_DIGEST)

    @model_validator(mode="after")
    def _complete(self) -> TrainerIdentity:
        """Each kind names what identifies it, and nothing another kind would."""
        if self.kind == "builtin":
            if not self.name or self.argv or self.code_files or self.image or self.image_digest:
                raise ValueError("a builtin trainer is identified by its name alone")
        elif self.kind == "command":
            if not self.argv or self.image or self.image_digest:
                raise ValueError("a command trainer is identified by its argv and code file digests")
        elif not self.image or not self.image_digest or self.code_files:
            raise ValueError("an image trainer is identified by its image and digest")
        if self.kind != "builtin" and not self.contract:
            raise ValueError(f"a {self.kind} trainer names the training contract it follows")
        return self

    def describe(self) -> str:
        """One line for people: what ran."""
        if self.kind == "builtin":
            return f"builtin {self.name}"
        if self.kind == "image":
            command = f" {' '.join(self.argv)}" if self.argv else ""
            return f"image {self.image}{command}"
        return f"command {' '.join(self.argv)}"
