"""`qatie train`: FP32 pre-training, then QAT fine-tuning, resumable, single-process or DDP.

The run is a sequence of global steps: `[0, fp32_steps)` trains the float network, then the
activation ranges are calibrated and `[fp32_steps, fp32_steps + qat_steps)` trains with int8
simulated. Each step's batch comes from a generator seeded with (seed, rank, step), so a run
resumed from a checkpoint sees exactly the batches the killed run would have seen.
Under `torchrun` (WORLD_SIZE set) the same code runs data-parallel with gloo; rank 0 writes.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from qatie.checkpoint import FORMAT, build_model, load_checkpoint, save_atomic
from qatie.data import check_patch_fits, load_pairs
from qatie.data.batches import sample_patches
from qatie.data.pairs import ImagePair
from qatie.errors import QatieError
from qatie.losses import enhancement_loss, psnr
from qatie.model import MIN_SIZE, ModelConfig, QATIENet
from qatie.ptq import calibrate
from qatie.quant.fake_quant import set_quant_mode


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in every checkpoint so a resume needs no flags."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: str = "synthetic"
    patch: int = 64
    batch: int = 8
    fp32_steps: int = 1000
    qat_steps: int = 500
    lr: float = 1e-3
    qat_lr: float = 1e-4
    ssim_weight: float = 0.5
    calib_batches: int = 8
    seed: int = 0
    ckpt_every: int = 100

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return cls(**{**d, "model": ModelConfig(**d["model"])})

    def validate(self) -> None:
        if self.patch < MIN_SIZE:
            raise QatieError(f"--patch {self.patch} is below the network's minimum size {MIN_SIZE}")
        if self.fp32_steps < 0 or self.qat_steps < 0 or self.fp32_steps + self.qat_steps == 0:
            raise QatieError("--fp32-steps and --qat-steps must be >= 0 and not both 0")
        if self.batch < 1 or self.model.width < 1 or self.ckpt_every < 1:
            raise QatieError("--batch, --width and --ckpt-every must be >= 1")

    @property
    def total_steps(self) -> int:
        return self.fp32_steps + self.qat_steps


class _Distributed:
    """Rank/world of this process; initialises gloo when started by torchrun."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")
        self.rank = dist.get_rank() if self.world > 1 else 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, phase: str) -> nn.Module:
        """A DDP wrapper (which broadcasts rank 0's weights, quantizer ranges included).

        In the float phase the learned quantizer ranges get no gradient, which DDP must be told.
        """
        if self.world == 1:
            return model
        return DistributedDataParallel(model, find_unused_parameters=phase == "fp32")

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _batch_generator(cfg: TrainConfig, rank: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(cfg.seed * 1_000_003 + rank * 7919 + step)


def cosine_lr(cfg: TrainConfig, phase: str, step: int) -> float:
    """Cosine decay within each phase, from the phase's base rate to 1 % of it.

    A float model that ends its phase at a low rate is converged, so the FP32 and PTQ rows of
    the evaluation are fair baselines for QAT. Computed from the step alone, so a resumed run
    uses exactly the rates the uninterrupted run would have used.
    """
    base, start, length = (cfg.lr, 0, cfg.fp32_steps) if phase == "fp32" else (cfg.qat_lr, cfg.fp32_steps, cfg.qat_steps)
    progress = min(1.0, (step - start) / max(1, length))
    return base * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _optimizer(model: nn.Module, cfg: TrainConfig, phase: str) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=cfg.lr if phase == "fp32" else cfg.qat_lr)


class Trainer:
    """Holds the run state; `run()` trains to the step budget, checkpointing as it goes."""

    def __init__(self, cfg: TrainConfig, out: Path, resume: bool) -> None:
        self.dist = _Distributed()
        self.out = out
        ckpt = self._existing_checkpoint(resume)
        self.cfg = TrainConfig.from_dict(ckpt["config"]["train"]) if ckpt else cfg
        self.cfg.validate()
        self.pairs: list[ImagePair] = load_pairs(self.cfg.data, "train", self.cfg.seed)
        check_patch_fits(self.pairs, self.cfg.patch, self.cfg.data)
        torch.manual_seed(self.cfg.seed)
        self.model = build_model(ckpt) if ckpt else QATIENet(self.cfg.model)
        self.fp32_state = ckpt.get("fp32_model") if ckpt else None
        self.step = ckpt["step"] if ckpt else 0
        self.history: list[dict] = ckpt["history"] if ckpt else []
        self.phase = ckpt["phase"] if ckpt else "fp32"
        set_quant_mode(self.model, "qat" if self.phase == "qat" else "off")
        self.optimizer = _optimizer(self.model, self.cfg, self.phase)
        if ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        self.ddp_model = self.dist.wrap(self.model, self.phase)

    def _existing_checkpoint(self, resume: bool) -> dict | None:
        if not self.out.exists():
            return None
        if not resume:
            raise QatieError(f"{self.out} already exists; pass --resume to continue it or choose another -o")
        return load_checkpoint(self.out)

    def _checkpoint(self, done: bool = False) -> None:
        if self.dist.is_main:
            save_atomic(
                {
                    "format": FORMAT,
                    "config": {"model": self.cfg.model.to_dict(), "train": self.cfg.to_dict()},
                    "step": self.step,
                    "done": done,
                    "model": self.model.state_dict(),
                    "fp32_model": self.fp32_state,
                    "optimizer": self.optimizer.state_dict(),
                    "phase": self.phase,
                    "history": self.history,
                    "torch_version": str(torch.__version__),  # plain str: loads with weights_only
                },
                self.out,
            )
        self.dist.barrier()

    def _enter_qat(self) -> None:
        """Snapshot the float weights, calibrate ranges on training batches, switch to QAT.

        With `fp32_steps == 0` (QAT from scratch) there are no trained float weights to keep.
        """
        if self.cfg.fp32_steps > 0:
            self.fp32_state = {k: v.clone() for k, v in self.model.state_dict().items()}
        batches = (
            sample_patches(self.pairs, self.cfg.batch, self.cfg.patch, _batch_generator(self.cfg, 0, -1 - i))[0]
            for i in range(self.cfg.calib_batches)
        )
        calibrate(self.model, batches)
        set_quant_mode(self.model, "qat")
        self.phase = "qat"
        self.optimizer = _optimizer(self.model, self.cfg, "qat")
        self.ddp_model = self.dist.wrap(self.model, "qat")

    def run(self) -> dict | None:
        cfg = self.cfg
        bar = tqdm(
            total=cfg.total_steps, initial=self.step, disable=not self.dist.is_main,
            desc="train", dynamic_ncols=True, mininterval=1.0,
        )
        self.model.train()
        while self.step < cfg.total_steps:
            if self.phase == "fp32" and self.step >= cfg.fp32_steps:
                self._enter_qat()
            inp, target = sample_patches(
                self.pairs, cfg.batch, cfg.patch, _batch_generator(cfg, self.dist.rank, self.step)
            )
            output = self.ddp_model(inp)
            loss = enhancement_loss(output, target, cfg.ssim_weight)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for group in self.optimizer.param_groups:
                group["lr"] = cosine_lr(cfg, self.phase, self.step)
            self.optimizer.step()
            self.step += 1
            record = {"step": self.step, "phase": self.phase,
                      "loss": loss.item(), "psnr": float(psnr(output.detach(), target))}
            self.history.append(record)
            bar.update(1)
            bar.set_postfix(phase=record["phase"], loss=f"{record['loss']:.4f}", psnr=f"{record['psnr']:.2f}")
            if self.step % cfg.ckpt_every == 0 and self.step < cfg.total_steps:
                self._checkpoint()
        bar.close()
        if cfg.qat_steps == 0:
            self.fp32_state = self.model.state_dict()
        self._checkpoint(done=True)
        self.dist.close()
        return self.history[-1] if self.dist.is_main and self.history else None


def train(cfg: TrainConfig, out: Path, resume: bool = False) -> dict | None:
    """Train (or resume) the run stored at `out`; rank 0 gets the last step's loss/PSNR record."""
    return Trainer(cfg, out, resume).run()
