"""Training a LoRA on the packaged tiny model: only the adapters move, a run resumes, the CLI loads files."""

import torch

from minisd.__main__ import main
from minisd.models.lora import lora_layers
from minisd.pipelines import StableDiffusionPipeline
from minisd.pipelines.lora_formats import lora_state_dict, save_lora_file
from minisd.shapes import tiny_model_path
from minisd.training.lora import add_adapters, lora_dataset, novel_scenes, train_lora, trainable


def tiny_pipe():
    return StableDiffusionPipeline.from_pretrained(tiny_model_path(), device="cpu")


def test_only_adapters_train_and_a_run_resumes(tmp_path):
    data = lora_dataset(num_novel=16, num_base=16, progress=False)
    pipes, states = [], []
    for interrupted in (False, True):
        pipe = tiny_pipe()
        before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
        n = add_adapters(pipe, rank=2)
        assert n == sum(p.numel() for p in trainable(pipe, "cyan")) and n > 0
        ckpt = tmp_path / f"ckpt{interrupted}"
        if interrupted:
            train_lora(
                pipe, data, steps=2, batch_size=4, checkpoint_dir=ckpt, checkpoint_every=2, progress=False
            )
            pipe = tiny_pipe()  # a new process: fresh models, the state comes from the checkpoint
            add_adapters(pipe, rank=2)
        losses = train_lora(
            pipe, data, steps=4, batch_size=4, checkpoint_dir=ckpt, checkpoint_every=2, progress=False
        )
        assert len(losses) == 4
        after = {
            k.replace(".base_layer", ""): v for k, v in pipe.unet.state_dict().items() if "lora_" not in k
        }
        assert all(torch.equal(after[k], v) for k, v in before.items())  # the base is frozen
        pipes.append(pipe)
        states.append([p.detach().clone() for p in trainable(pipe, "cyan")])
    assert any(p.abs().sum() > 0 for p in states[0][1::2])  # B moved away from zero
    assert all(torch.equal(a, b) for a, b in zip(*states, strict=True))


def test_held_out_cyan_captions_are_kept_out_of_training():
    train = {s.caption for s in novel_scenes(200, seed=0, held_out=False)}
    test = {s.caption for s in novel_scenes(50, seed=1, held_out=True)}
    assert train and test and not train & test and all("cyan" in c for c in test)


def test_cli_generate_with_loras(tmp_path, capsys):
    pipe = tiny_pipe()
    add_adapters(pipe, rank=2)
    for layer in lora_layers(pipe.unet).values():
        torch.nn.init.normal_(layer.lora_B["cyan"].weight, std=0.05)
    path = save_lora_file(lora_state_dict({"unet": pipe.unet, "text_encoder": pipe.text_encoder}, "cyan"),
                          tmp_path / "a.safetensors")  # fmt: skip
    outs = []
    for extra in ([], ["--lora", f"{path}:0.5", "--lora", str(path)]):
        out = tmp_path / f"out{len(extra)}.png"
        main(["generate", "a red circle on a blue background", "-o", str(out), "--steps", "2", *extra])
        outs.append(out.read_bytes())
    assert outs[0] != outs[1]
    assert f"LoRA {path} at scale 0.5" in capsys.readouterr().out
