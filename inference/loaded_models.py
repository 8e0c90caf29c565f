"""The models the inference process keeps in memory, within a budget, least recently used out.

A base model is loaded once; LoRA and QLoRA adapters of that base are loaded into one peft
model on it as named adapters (peft's multi-adapter), and a request picks its adapter with
`set_adapter`. Tunings that change the model's forward in other ways (full weights, prompt
learning, bottleneck adapters) get a model of their own. QLoRA adapters run on the
full-precision base: the adapter was trained against the dequantised weights' values.
"""

import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from inference.fetched import FetchedFolders

# Tunings whose adapters share one peft model on their base.
SHARED_BASE_TUNINGS = {"lora", "qlora"}


@dataclass(frozen=True)
class ModelRef:
    """What the API resolved a model name to: the inference process reads no database."""

    model_id: str
    base_path: str  # relative to base_job's folder where that is set
    tuning: str | None  # None: the base model itself
    weights_path: str | None  # adapter or full-model folder, relative to weights_job's
    bottleneck: dict[str, Any] | None = None  # settings for a bottleneck job's checkpoint
    weights_job: str | None = None
    base_job: str | None = None


@dataclass
class Loaded:
    """One model object with the lock that serialises generation on it."""

    model: Any
    tokenizer: Any
    nbytes: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    adapters: "OrderedDict[str, int]" = field(default_factory=OrderedDict)  # name -> bytes


def _model_bytes(model: Any) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _folder_bytes(folder: str) -> int:
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


def _tokenizer(folder: str, base_path: str) -> Any:
    from transformers import AutoTokenizer

    # An artifact folder holds the tokenizer it trained with; an older one may hold none.
    source = folder if (Path(folder) / "tokenizer_config.json").is_file() else base_path
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def placement() -> dict[str, Any]:
    """Where models run and in what dtype: on a GPU in bf16 (fp16 where the GPU has no
    bf16), whatever the weights were saved in (the tiny model's fp32 too); on the CPU in
    the dtype the weights were saved in."""
    import torch

    if torch.cuda.is_available():
        return {"device": "cuda", "dtype": torch.bfloat16 if torch.cuda.is_bf16_supported()
                else torch.float16}
    return {"device": "cpu"}


def _place(model: Any) -> Any:
    # Adapters (LoRA, prompt encoders, bottleneck modules) are created or loaded in fp32:
    # one dtype for the whole model, so no matmul meets two.
    return model.to(**placement()).eval()


def _load_base(path: str) -> Any:
    from transformers import AutoModelForCausalLM

    dtype = placement().get("dtype", "auto")
    return _place(AutoModelForCausalLM.from_pretrained(path, dtype=dtype))


def _load_own(ref: ModelRef) -> Any:
    """A model with weights or modules of its own: full, prompt learning, bottleneck."""
    assert ref.weights_path is not None
    if ref.tuning == "full":
        return _load_base(ref.weights_path)
    if ref.tuning == "adapter" and ref.bottleneck is not None:
        return _bottleneck_checkpoint(ref)
    if ref.tuning == "adapter":
        from worker.tunings.bottleneck import load_bottleneck_adapters

        # Adapters are built in the base's dtype and on its device, and loaded from fp32.
        return _place(load_bottleneck_adapters(_load_base(ref.base_path), ref.weights_path))
    from peft import PeftModel

    from worker.tunings.prompt_learning import fix_generation

    model = PeftModel.from_pretrained(_load_base(ref.base_path), ref.weights_path)
    return _place(fix_generation(model))


def _bottleneck_checkpoint(ref: ModelRef) -> Any:
    """A bottleneck job's checkpoint: the trainer saved the whole model; its adapter tensors
    go onto a fresh base with the job's adapter settings (every one of them must be there)."""
    from safetensors.torch import load_file

    from worker.tunings.bottleneck import (
        BottleneckConfig,
        adapter_state_dict,
        add_bottleneck_adapters,
    )

    assert ref.weights_path is not None and ref.bottleneck is not None
    model = _load_base(ref.base_path)
    add_bottleneck_adapters(model, BottleneckConfig(**ref.bottleneck))
    expected = set(adapter_state_dict(model))
    saved = {k: v for k, v in load_file(str(Path(ref.weights_path) / "model.safetensors"))
             .items() if k in expected}
    if set(saved) != expected:
        raise KeyError(f"checkpoint {ref.weights_path} lacks adapter tensors "
                       f"{sorted(expected - set(saved))[:3]}")
    model.load_state_dict(saved, strict=False)
    return _place(model)


class ModelCache:
    """Loads on demand and evicts least recently used units until the budget holds.

    A unit is a base model (with the peft model on it), one adapter in it, or a model of its
    own. Loading and eviction happen under one lock; eviction of an adapter also takes its
    base's generation lock, so no generation sees its adapter vanish mid-way.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        self._units: OrderedDict[tuple[str, str], int] = OrderedDict()  # key -> bytes
        self._bases: dict[str, Loaded] = {}
        self._own: dict[str, Loaded] = {}
        self._fetched = FetchedFolders()
        self._loading: set[tuple[str, str]] = set()
        self.loads = 0
        self.evictions = 0

    @property
    def loaded_bytes(self) -> int:
        return sum(self._units.values())

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {"budget_bytes": self.budget_bytes, "loaded_bytes": self.loaded_bytes,
                    "loaded": [{"kind": k, "name": n, "bytes": b}
                               for (k, n), b in self._units.items()],
                    "loads": self.loads, "evictions": self.evictions,
                    **self._fetched.describe()}

    def acquire(self, ref: ModelRef) -> tuple[Loaded, str | None]:
        """The loaded object for `ref` and the adapter to activate on it (None: none, or the
        base alone). The caller generates under `loaded.lock` and checks the adapter is still
        there (`loaded.adapters`), else asks again."""
        with self._lock:
            try:
                ref = self._local(ref)
                if ref.tuning is None:
                    return self._base(ref.base_path), None
                if ref.tuning in SHARED_BASE_TUNINGS:
                    return self._shared_adapter(ref), ref.model_id
                return self._own_model(ref), None
            finally:
                self._loading.clear()
                self._fetched.forget_unused(set(self._units))

    def _local(self, ref: ModelRef) -> ModelRef:
        """`ref` with local folders, fetched from the store where they live there; each
        folder is kept while a unit loaded from it is (`_loading` until it is)."""
        if ref.tuning == "full":  # its own folder is its base: no other to fetch
            self._loading = {("own", ref.model_id)}
            assert ref.weights_path is not None
            weights = self._fetched.local(ref.weights_job, ref.weights_path, self._loading)
            return replace(ref, weights_path=weights, base_job=None, weights_job=None)
        base = self._fetched.local(ref.base_job, ref.base_path, set())
        # Each folder is kept by the unit loaded from it (a unit's key names its base by the
        # local folder, known only now).
        own = {("own", ref.model_id)}
        if ref.tuning is None:
            base_users, weights_users = {("base", base)}, set()
        elif ref.tuning in SHARED_BASE_TUNINGS:
            base_users, weights_users = {("base", base)}, {("adapter", f"{base}\0{ref.model_id}")}
        else:
            base_users, weights_users = own, own
        self._loading = base_users | weights_users
        self._fetched.local(ref.base_job, ref.base_path, base_users)
        local_weights = None if ref.weights_path is None else self._fetched.local(
            ref.weights_job, ref.weights_path, weights_users)
        return replace(ref, base_path=base, weights_path=local_weights, base_job=None,
                       weights_job=None)

    # -- units ---------------------------------------------------------------------------

    def _touch(self, key: tuple[str, str]) -> None:
        self._units.move_to_end(key)

    def _make_room(self, nbytes: int, keep: set[tuple[str, str]]) -> None:
        for key in list(self._units):
            if self.loaded_bytes + nbytes <= self.budget_bytes:
                return
            if key not in keep and key in self._units:
                self._evict(key)

    def _evict(self, key: tuple[str, str]) -> None:
        kind, name = key
        self.evictions += 1
        if kind == "own":
            del self._own[name], self._units[key]
        elif kind == "adapter":
            base_path = name.split("\0", 1)[0]
            loaded = self._bases[base_path]
            with loaded.lock:
                self._drop_adapter(loaded, name.split("\0", 1)[1])
            del self._units[key]
        else:
            loaded = self._bases.pop(name)
            for adapter in list(loaded.adapters):
                self._units.pop(("adapter", f"{name}\0{adapter}"), None)
            del self._units[key]
        # The weights fetched for what left memory leave the disk with it.
        self._fetched.forget_unused(set(self._units) | self._loading)
        if placement()["device"] == "cuda":
            import torch

            torch.cuda.empty_cache()  # give the freed blocks back, for the next model

    @staticmethod
    def _drop_adapter(loaded: Loaded, adapter: str) -> None:
        del loaded.adapters[adapter]
        if loaded.adapters:
            loaded.model.delete_adapter(adapter)
        else:
            # peft cannot delete its last adapter; unloading gives the plain base back.
            loaded.model = loaded.model.unload()

    def _base(self, path: str) -> Loaded:
        key = ("base", path)
        if path not in self._bases:
            # Room is made before loading, from the weights' size on disk, so the budget
            # holds at the peak too; the accounting then keeps what the tensors measure.
            self._make_room(_folder_bytes(path), set())
            model = _load_base(path)
            nbytes = _model_bytes(model)
            self._bases[path] = Loaded(model, _tokenizer(path, path), nbytes)
            self._units[key] = nbytes
            self.loads += 1
        self._touch(key)
        return self._bases[path]

    def _shared_adapter(self, ref: ModelRef) -> Loaded:
        assert ref.weights_path is not None
        loaded = self._base(ref.base_path)
        key = ("adapter", f"{ref.base_path}\0{ref.model_id}")
        if ref.model_id not in loaded.adapters:
            from peft import PeftModel

            nbytes = _folder_bytes(ref.weights_path)
            self._make_room(nbytes, {("base", ref.base_path)})
            with loaded.lock:
                if isinstance(loaded.model, PeftModel):
                    loaded.model.load_adapter(ref.weights_path, adapter_name=ref.model_id)
                else:
                    loaded.model = PeftModel.from_pretrained(
                        loaded.model, ref.weights_path, adapter_name=ref.model_id).eval()
                _place(loaded.model)
                loaded.adapters[ref.model_id] = nbytes
            self._units[key] = nbytes
            self.loads += 1
        self._touch(key)
        return loaded

    def _own_model(self, ref: ModelRef) -> Loaded:
        key = ("own", ref.model_id)
        if ref.model_id not in self._own:
            assert ref.weights_path is not None
            on_disk = _folder_bytes(ref.weights_path)
            if ref.tuning != "full":
                on_disk += _folder_bytes(ref.base_path)
            self._make_room(on_disk, set())
            model = _load_own(ref)
            nbytes = _model_bytes(model)
            self._own[ref.model_id] = Loaded(model, _tokenizer(ref.weights_path, ref.base_path),
                                             nbytes)
            self._units[key] = nbytes
            self.loads += 1
        self._touch(key)
        return self._own[ref.model_id]
