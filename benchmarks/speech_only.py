"""Speech-only sampling on and off, on the tiny random Llasa made to stray: what the reward would drop or miss.

The tiny model's logits of its non-speech tokens (text tokens and markers) are raised by --text_offset and those of
<|SPEECH_GENERATION_END|> and <|eot_id|> by --end_offset, so that it strays the way an imperfect policy does: text
tokens in the middle of speech, and ends before the speech (at temperature 0.8 the defaults put about 25 % of each
step's probability on non-speech tokens and 5 % on the two ends). Both settings sample the same prompts with the same seed
through llasa.synthesis.generate_speech; the shares are the reward's metrics: dropped_tokens (non-speech tokens per
completion) and no_speech (share of completions without a speech code), with the mean speech codes per completion.

    python -m benchmarks.speech_only
"""

import tempfile
from dataclasses import dataclass, field, replace

import torch

from llasa import synthesis
from llasa.cli import ScriptParser
from llasa.sampling import sampling_shares
from llasa.synthesis import Request, SamplingOptions

TEXTS = ["The quick brown fox jumps over the lazy dog.", "A rainbow appeared after the summer rain."]


def stray(llasa: synthesis.Llasa, text_offset: float, end_offset: float) -> None:
    """Give the model's LM head a bias: +text_offset on every non-speech token, +end_offset on END and end of turn."""
    head = llasa.model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.fill_(text_offset)
        first = llasa.vocab.first_speech_id
        biased.bias[first : first + 65536] = 0.0
        biased.bias[[llasa.vocab.speech_end_id, llasa.vocab.eot_id]] = end_offset
    llasa.model.lm_head = biased


def compare(llasa: synthesis.Llasa, num_samples: int, room: int, seed: int) -> dict[str, dict[str, float]]:
    """The shares with speech-only sampling on and off, on TEXTS with `num_samples` samples each."""
    prompts = [synthesis.prompt_ids(llasa, Request(str(i), text), None, 2048) for i, text in enumerate(TEXTS)]
    # No top-k: with the offsets, the 50 likeliest tokens would all be non-speech ones, and speech could not be drawn.
    options = SamplingOptions(max_length=max(map(len, prompts)) + room, seed=seed, top_k=0)
    shares = {}
    for name, setting in (("on", options), ("off", replace(options, speech_only=False))):
        torch.manual_seed(seed)
        parsed = [s for row in synthesis.generate_speech(llasa, prompts, setting, num_samples, TEXTS) for s in row]
        shares[name] = {**sampling_shares(parsed), "codes": sum(len(s.codes) for s in parsed) / len(parsed)}
    return shares


@dataclass(frozen=True)
class Arguments:
    num_samples: int = field(default=16, metadata={"help": "Samples per text."})
    room: int = field(default=160, metadata={"help": "Tokens each completion may generate."})
    text_offset: float = field(default=3.25, metadata={"help": "Logit added to non-speech tokens."})
    end_offset: float = field(default=6.2, metadata={"help": "Logit added to END and end of turn."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})


def main(argv=None) -> None:
    [args] = ScriptParser(Arguments, description=__doc__.split("\n\n")[0]).parse(argv)
    from testing.tiny_models import build_tiny_llasa

    with tempfile.TemporaryDirectory() as folder:
        llasa = synthesis.load_model(str(build_tiny_llasa(folder)), device="cpu")
    stray(llasa, args.text_offset, args.end_offset)
    shares = compare(llasa, args.num_samples, args.room, args.seed)
    print(f"{len(TEXTS)} texts x {args.num_samples} samples, up to {args.room} tokens each")
    print(f"{'speech-only':<12} {'dropped_tokens':>14} {'no_speech':>9} {'codes':>6}")
    for name, values in shares.items():
        print(f"{name:<12} {values['dropped_tokens']:>14.2f} {values['no_speech']:>9.2f} {values['codes']:>6.1f}")


if __name__ == "__main__":
    main()
