"""mia-mamba on CPU: tiny random Mamba checkpoints written in both layouts (mamba_ssm and
transformers) with the same weights, loaded through the registry by folder path."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mia_mamba import kernel
from mia_mamba.layout import HF, MAMBA_SSM, detect_layout, hf_to_ssm_config, ssm_to_hf_config
from mia_mamba.tiny import make_tiny_mamba
from tiny_models import make_tiny_tokenizer

from mia_core import registry
from mia_core.cli import cli
from mia_core.errors import MiaError
from mia_core.extraction.prompt import prompt
from mia_core.formats.runs import open_run
from mia_core.types import Sampling

TEXTS = ["Beautiful is better than ugly.", "Explicit is better than implicit, said", "Simple is better than"]
TOKENIZER_VOCAB = 400
PAD_MULTIPLE = 64  # 400 → 448 embedding rows: padded ids must never come out


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("mamba")
    tok = make_tiny_tokenizer(vocab_size=TOKENIZER_VOCAB)
    assert len(tok) == TOKENIZER_VOCAB
    return {layout: make_tiny_mamba(root / layout, layout, tok, pad_vocab_size_multiple=PAD_MULTIPLE, seed=3)
            for layout in (MAMBA_SSM, HF)}


@pytest.fixture(scope="module")
def backends(folders):
    return {layout: registry.backends.create(str(path)) for layout, path in folders.items()}


@pytest.fixture(scope="module")
def prefixes(backends):
    return backends[HF].tokenizer.encode_batch(TEXTS)


def test_layouts_detected_and_registered_by_folder(folders):
    assert (folders[MAMBA_SSM] / "pytorch_model.bin").is_file()
    assert json.loads((folders[MAMBA_SSM] / "config.json").read_text())["d_model"] == 32
    for layout, path in folders.items():
        assert detect_layout(path)[0] == layout
        # the generic "any folder" entry of mia-hf must not take Mamba folders
        assert registry.backends.get(str(path)).plugin == registry.tokenizers.get(str(path)).plugin == "mamba"
    for name in ("mamba-3b", "mamba-2.8b-hf", "mamba:state-spaces/mamba-130m"):
        assert registry.backends.get(name).info["capabilities"] == ("generate", "score")


def test_config_conversion_of_the_real_mamba_3b_config():
    slimpj = {"d_model": 2560, "n_layer": 64, "vocab_size": 50277, "ssm_cfg": {}, "rms_norm": True,
              "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8}
    hf = ssm_to_hf_config(slimpj)
    assert hf["vocab_size"] == 50280 and hf["hidden_size"] == 2560 and hf["num_hidden_layers"] == 64
    assert hf["time_step_rank"] == 160 and hf["state_size"] == 16 and hf["conv_kernel"] == 4
    assert hf["tie_word_embeddings"] and hf["residual_in_fp32"]
    back = hf_to_ssm_config(hf)
    assert (back["d_model"], back["n_layer"], back["vocab_size"]) == (2560, 64, 50280)
    assert back["ssm_cfg"]["d_state"] == 16 and back["pad_vocab_size_multiple"] == 1


def test_bad_checkpoints_give_clear_errors(tmp_path):
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(MiaError, match="unknown checkpoint layout"):
        detect_layout(llama)
    assert registry.backends.get(str(llama)).plugin != "mamba"  # left to mia-hf
    with pytest.raises(MiaError, match="unknown checkpoint layout"):
        registry.backends.create(f"mamba:{llama}")
    mamba2 = tmp_path / "mamba2"
    mamba2.mkdir()
    (mamba2 / "config.json").write_text(json.dumps({"d_model": 8, "n_layer": 1, "vocab_size": 10,
                                                    "ssm_cfg": {"layer": "Mamba2"}}))
    assert registry.backends.get(str(mamba2)).plugin == "mamba"
    with pytest.raises(MiaError, match="Mamba2 checkpoints are not supported"):
        registry.backends.create(str(mamba2))
    noweights = tmp_path / "noweights"
    noweights.mkdir()
    (noweights / "config.json").write_text(json.dumps({"d_model": 8, "n_layer": 1, "vocab_size": 10}))
    with pytest.raises(MiaError, match="no weights"):
        registry.backends.create(f"mamba:{noweights}", {"tokenizer": str(tmp_path)})


def test_identical_greedy_outputs_from_both_layouts(backends, prefixes):
    ssm, hf = backends[MAMBA_SSM], backends[HF]
    assert ssm.describe()["layout"] == MAMBA_SSM and hf.describe()["layout"] == HF
    assert ssm.describe()["kernel"] == "torch" and not ssm.describe()["bos_prepended"]
    assert ssm.describe()["vocab_used"] == TOKENIZER_VOCAB
    assert ssm.tokenizer.fingerprint == hf.tokenizer.fingerprint
    out_ssm = ssm.generate(prefixes, 12, Sampling())
    out_hf = hf.generate(prefixes, 12, Sampling())
    assert out_ssm == out_hf
    assert len({tuple(o) for o in out_hf}) == len(prefixes)  # outputs depend on the prefix
    # batching (mixed lengths: left padding, masked) changes nothing
    assert [hf.generate([p], 12, Sampling())[0] for p in prefixes] == out_hf
    # the same as transformers' own generate on the unconverted folder
    from transformers import MambaForCausalLM

    raw = MambaForCausalLM.from_pretrained(str(backends[HF].info["checkpoint_folder"])).eval()
    ids = torch.tensor([prefixes[0]])
    suppress = list(range(TOKENIZER_VOCAB, raw.config.vocab_size))
    want = raw.generate(ids, max_new_tokens=12, do_sample=False, suppress_tokens=suppress,
                        eos_token_id=hf.tokenizer.eos_id, pad_token_id=hf.tokenizer.eos_id)
    assert out_hf[0] == want[0, ids.shape[1]:].tolist()[: len(out_hf[0])]


def test_sampling_is_seeded_and_stays_in_the_tokenizer_vocabulary(backends, prefixes):
    hf, ssm = backends[HF], backends[MAMBA_SSM]
    sampling = Sampling(temperature=3.0, seed=7)
    a, b = hf.generate(prefixes, 16, sampling), ssm.generate(prefixes, 16, sampling)
    assert a == b
    assert max(max(row) for row in a) < TOKENIZER_VOCAB
    assert hf.generate(prefixes, 16, Sampling(temperature=3.0, seed=8)) != a


def test_score_agrees_with_greedy_and_across_layouts(backends, prefixes):
    hf, ssm = backends[HF], backends[MAMBA_SSM]
    greedy = hf.generate(prefixes, 10, Sampling())
    seqs = [p + g for p, g in zip(prefixes, greedy, strict=True)]
    starts = [len(p) for p in prefixes]
    scores = hf.score(seqs, starts)
    for s, g in zip(scores, greedy, strict=True):
        assert s.argmax.tolist()[: len(g)] == g  # teacher-forced argmax = greedy continuation
        assert np.all(s.logprob <= 0) and np.all(s.std > 0) and np.all(s.mean < 0)
        assert np.all(s.logprob >= s.mean - 10 * s.std)
    other = ssm.score(seqs, starts)
    for x, y in zip(scores, other, strict=True):
        np.testing.assert_allclose(x.logprob, y.logprob, rtol=1e-5, atol=1e-5)
    # from position 0: no BOS, so the first token has no context (NaN, argmax -1, as in mia-hf)
    whole = hf.score(prefixes, 0)
    assert [len(s.logprob) for s in whole] == [len(p) for p in prefixes]
    assert np.isnan(whole[0].logprob[0]) and whole[0].argmax[0] == -1
    assert np.allclose(whole[0].logprob[3:], hf.score([prefixes[0]], 3)[0].logprob, atol=1e-5)


@pytest.mark.parametrize("sampling", [Sampling(temperature=0.7), Sampling(temperature=1.3, top_k=5)])
def test_score_gives_sampled_logprobs_under_the_sampling_scheme(backends, prefixes, sampling):
    from mia_core.types import scores_sampling

    hf, ssm = backends[HF], backends[MAMBA_SSM]
    assert scores_sampling(hf) and scores_sampling(ssm)
    seq = prefixes[1]
    (s,) = hf.score([seq], 2, sampling=sampling)
    # independently: the logits of transformers' model, padded ids excluded, at temperature T, top-k kept
    with torch.no_grad():
        logits = hf.model(torch.tensor([seq])).logits[0, 1:-1, :TOKENIZER_VOCAB].double() / sampling.temperature
    if sampling.top_k:
        kth = torch.topk(logits, sampling.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    expected = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(seq[2:])[:, None])[:, 0].numpy()
    np.testing.assert_allclose(s.sampled_logprob, expected, rtol=1e-4, atol=1e-4)
    (other,) = ssm.score([seq], 2, sampling=sampling)
    np.testing.assert_allclose(other.sampled_logprob, s.sampled_logprob, rtol=1e-4, atol=1e-4)
    assert hf.score([seq], 2)[0].sampled_logprob is None


def test_kernel_selection_and_errors(monkeypatch, folders):
    assert kernel.select_kernel("auto") == "torch"  # no CUDA here
    assert kernel.select_kernel("torch") == "torch"
    with pytest.raises(MiaError, match="expected one of auto, cuda, torch"):
        kernel.select_kernel("triton")
    with pytest.raises(MiaError, match="kernel=cuda needs a CUDA GPU"):
        registry.backends.create(str(folders[HF]), {"kernel": "cuda"})
    with pytest.raises(MiaError, match="not device=cpu"):
        kernel.select_kernel("cuda", "cpu")
    # a CUDA machine without mamba-ssm: say what to install
    monkeypatch.setattr(kernel, "cuda_available", lambda: True)
    monkeypatch.setattr(kernel, "mamba_ssm_import_error", lambda: "ModuleNotFoundError: No module named 'mamba_ssm'")
    with pytest.raises(MiaError, match=r"pip install 'mia-mamba\[cuda\]'"):
        kernel.select_kernel("cuda")
    assert kernel.select_kernel("auto") == "torch"
    monkeypatch.setattr(kernel, "mamba_ssm_import_error", lambda: None)
    assert kernel.select_kernel("auto") == "cuda" and kernel.select_kernel("auto", "cpu") == "torch"


def test_options(folders, prefixes):
    with pytest.raises(MiaError, match="unknown option"):
        registry.backends.create(str(folders[HF]), {"kernal": "torch"})
    with pytest.raises(MiaError, match="dtype"):
        registry.backends.create(str(folders[HF]), {"dtype": "int3"})
    with pytest.raises(MiaError, match="not a boolean"):
        registry.backends.create(str(folders[HF]), {"bos": "maybe"})
    with_bos = registry.backends.create(f"mamba:{folders[HF]}", {"bos": "true", "kernel": "torch", "device": "cpu"})
    assert with_bos.describe()["bos_prepended"] and with_bos.describe()["kernel"] == "torch"
    bos = with_bos.tokenizer.bos_id
    plain = registry.backends.create(str(folders[HF]))
    assert with_bos.generate(prefixes, 5, Sampling()) == plain.generate([[bos] + p for p in prefixes], 5, Sampling())


def test_hub_names_offline_say_how_to_get_them(monkeypatch, tmp_path, folders, runner, in_tmp):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    # an empty cache even where the real one holds these checkpoints
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(MiaError, match=r"state-spaces/mamba-2\.8b-slimpj.*not available offline.*download"):
        registry.backends.create("mamba-3b")
    # through the CLI: one line, exit 1, no traceback
    res = runner.invoke(cli, ["prefix", "--model", "mamba-3b", "--dataset", "corpus", "--size", "2"])
    assert res.exit_code == 1 and "EleutherAI/gpt-neox-20b" in res.stderr and "Traceback" not in res.output
    # a mamba_ssm checkpoint ships no tokenizer: the default one is named when missing ...
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "pytorch_model.bin"):
        (bare / f).symlink_to(folders[MAMBA_SSM] / f)
    with pytest.raises(MiaError, match=r"EleutherAI/gpt-neox-20b.*not available offline"):
        registry.tokenizers.create(str(bare))
    # ... and tokenizer=FOLDER supplies one
    tok = registry.tokenizers.create(str(bare), {"tokenizer": str(folders[HF])})
    assert tok.fingerprint == registry.tokenizers.create(str(folders[HF])).fingerprint


def test_prefix_prompt_check_and_resume_through_the_cli(folders, backends, runner, in_tmp):
    model = str(folders[MAMBA_SSM])
    made = runner.invoke(cli, ["prefix", "--model", model, "--dataset", "corpus", "--prefix_tokens", "8",
                               "--suffix_tokens", "6", "--size", "5", "-q"])
    assert made.exit_code == 0, made.output
    (map_dir,) = (in_tmp / "Prefixes").iterdir()
    res = runner.invoke(cli, ["prompt", "--prefix_map", map_dir.name, "--model", str(folders[HF]),
                              "--num_strings", "7", "--batch_size", "3", "--max_length", "6", "-q"])
    assert res.exit_code == 0, res.output
    run = open_run(res.stdout.strip().splitlines()[-1])
    assert run.complete and len(run) == 7 and run.attrs["bos_prepended"] in (False, np.False_)
    pm_prefixes = [p.tolist() for p in run.prefix_map.read("prefixes")]
    want = backends[HF].generate(pm_prefixes, 6, Sampling())
    assert [t.tolist() for t in run.tokens()] == [want[i % 5] for i in range(7)]
    # teacher-forced check (mamba_ssm-layout folder): the argmax under the true suffix, and
    # matched lengths equal to those of greedy generation
    chk = runner.invoke(cli, ["check", "--prefix_map", map_dir.name, "--model", model, "-q"])
    assert chk.exit_code == 0, chk.output
    checked = open_run(chk.stdout.strip().splitlines()[-1])
    suffixes = [t.tolist() for t in checked.suffixes()]
    scores = backends[MAMBA_SSM].score([p + t for p, t in zip(pm_prefixes, suffixes, strict=True)], 8)
    assert [t.tolist() for t in checked.tokens()] == [s.argmax.tolist() for s in scores]
    greedy_matched = [next((i for i, (a, b) in enumerate(zip(g, t, strict=False)) if a != b), min(len(g), len(t)))
                      for g, t in zip(want, suffixes, strict=True)]
    assert checked.read("matched_length").tolist() == greedy_matched

    # an interrupted run resumes to exactly num_strings rows, identical to the uninterrupted one
    class Interrupted(type(backends[HF])):
        calls = 0

        def generate(self, *args, **kwargs):
            Interrupted.calls += 1
            if Interrupted.calls == 2:
                raise KeyboardInterrupt
            return super().generate(*args, **kwargs)

    flaky = backends[HF]
    flaky.__class__ = Interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            prompt(map_dir.name, str(folders[HF]), num_strings=7, batch_size=3, max_length=6,
                   out=in_tmp / "cut.h5", backend=flaky, quiet=True)
    finally:
        flaky.__class__ = Interrupted.__mro__[1]
    assert len(open_run(in_tmp / "cut.h5")) == 3 and not open_run(in_tmp / "cut.h5").complete
    resumed = runner.invoke(cli, ["prompt", "--resume", str(in_tmp / "cut.h5"), "-q"])
    assert resumed.exit_code == 0, resumed.output
    done = open_run(in_tmp / "cut.h5")
    assert done.complete and done.prefix_rows().tolist() == [i % 5 for i in range(7)]
    assert [t.tolist() for t in done.tokens()] == [t.tolist() for t in run.tokens()]


class _FakeSsmBackbone(torch.nn.Module):
    def __init__(self, hf_backbone):
        super().__init__()
        self.inner = hf_backbone

    def forward(self, input_ids, inference_params=None):
        return self.inner(input_ids).last_hidden_state


class FakeMambaLMHeadModel(torch.nn.Module):
    """mamba-ssm's ``MambaLMHeadModel`` interface (backbone, lm_head, forward().logits and its
    ``generate(..., vocab_size, cg)``) over a transformers Mamba: mamba-ssm needs CUDA, this
    checks the cuda path's plumbing on CPU. Real kernels: bench/mamba_gpu_check.py."""

    def __init__(self, hf_model):
        super().__init__()
        self.backbone, self.lm_head = _FakeSsmBackbone(hf_model.backbone), hf_model.lm_head
        self.config = SimpleNamespace(d_model=hf_model.config.hidden_size)
        self.calls = []

    def forward(self, input_ids, **_):
        return SimpleNamespace(logits=self.lm_head(self.backbone(input_ids)))

    def generate(self, input_ids, max_length, top_k, top_p, temperature, eos_token_id, vocab_size, cg):
        self.calls.append({"batch": input_ids.shape[0], "top_k": top_k, "vocab_size": vocab_size, "cg": cg})
        ids = input_ids
        while ids.shape[1] < max_length:  # greedy, as mamba-ssm's decode with top_k=1
            ids = torch.cat([ids, self(ids).logits[:, -1, :vocab_size].argmax(-1, keepdim=True)], dim=1)
        return ids


def test_cuda_path_plumbing_with_a_fake_mamba_ssm_model(folders, backends, prefixes):
    from mia_mamba.backend import MambaSsmBackend, SsmModel
    from mia_mamba.loading import load_transformers

    layout, config = detect_layout(folders[MAMBA_SSM])
    hf_model = load_transformers(folders[MAMBA_SSM], layout, config, torch.float32, "cpu", "fake")
    fake = FakeMambaLMHeadModel(hf_model)
    backend = MambaSsmBackend("fake", SsmModel(fake), backends[HF].tokenizer, info={"layout": layout})
    assert backend.describe()["kernel"] == "cuda" and not backend.bos_prepended
    assert backend.generate(prefixes, 8, Sampling()) == backends[HF].generate(prefixes, 8, Sampling())
    # one decoder call per prefix length, greedy, CUDA graphs on, padded ids excluded
    lengths = [len(p) for p in prefixes]
    assert sorted(c["batch"] for c in fake.calls) == sorted(lengths.count(n) for n in set(lengths))
    assert all(c["cg"] and c["top_k"] == 1 and c["vocab_size"] == TOKENIZER_VOCAB for c in fake.calls)
    seqs = [p + [5, 6, 7] for p in prefixes]
    for x, y in zip(backend.score(seqs, 4), backends[HF].score(seqs, 4), strict=True):
        np.testing.assert_allclose(x.logprob, y.logprob, atol=1e-5)
        assert x.argmax.tolist() == y.argmax.tolist()


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(MiaError, match="no such folder"):
        registry.tokenizers.create(f"mamba:{tmp_path / 'nowhere'}")
    with pytest.raises(MiaError, match="no such folder"):
        registry.backends.create(f"mamba:{tmp_path / 'nowhere'}")
    with pytest.raises(MiaError, match="give a hub id or a folder"):
        registry.backends.create("mamba:")
