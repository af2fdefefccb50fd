"""Error analysis of a code run's outputs: what kinds of mistakes, how many, on which split.

    python bench/error_analysis.py RUN [--split valid] [--beam 1] [--constrain none|python|grammar] [--examples 2]

Each output is put in the first class that fits it:

1. exact: its code tokens equal the reference's;
2. empty: nothing was written;
3. ran to max_len: the search reached the length limit without ending the output (a decoder that
   lost its place and loops; corpus BLEU punishes each extra token, exact match counts it once);
4. syntax, by the parser's message: an unclosed bracket, an unmatched closer, or other invalid syntax;
5. wrong call: it parses, but the set of functions and methods it calls (``name(`` and ``.name(``)
   differs from the reference's;
6. missing value: it calls the right names but leaves out a quoted value or an identifier that the
   input names in backquotes or quotes;
7. other: the right calls and values in another arrangement (arguments, order, operators).

Only parsed (``ast``), never executed. Prints the command, a table, the token BLEU with and
without the outputs that ran to max_len, how many of those have a literal (a number or a quoted
string) twice in their input against all inputs, and a few examples per class.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections import Counter
from pathlib import Path

import torch

from seq2seq.data.python_syntax import _syntax_error, parses
from seq2seq.evaluation.metrics import token_bleu
from seq2seq.models.interface import supported_max_len
from seq2seq.pipeline import run_corpus
from seq2seq.translator import Translator

CLASSES = ("exact", "empty", "ran to max_len", "syntax: unclosed bracket", "syntax: unmatched closer", "syntax: other",
           "wrong call", "missing value", "other")
_CALL = re.compile(r"(\.?[A-Za-z_][A-Za-z0-9_]*)\s*\(")
_NAMED = re.compile(r"`([^`]+)`|'([^']+)'|\"([^\"]+)\"")
_LITERAL = re.compile(r"'[^']*'|\"[^\"]*\"|\b\d+(?:\.\d+)?\b")


def classify(output: str, reference: str, source: str, *, tokenize, unit: str, finished: bool = True) -> str:
    if tokenize(output) == tokenize(reference):
        return "exact"
    if not output.strip():
        return "empty"
    if not finished:
        return "ran to max_len"
    if not parses(output, unit=unit):
        error = _syntax_error(output)
        message = error.msg if error is not None else ""
        if "never closed" in message or message == "incomplete input":
            return "syntax: unclosed bracket"
        if "unmatched" in message or "does not match" in message:
            return "syntax: unmatched closer"
        return "syntax: other"
    if set(_CALL.findall(output)) != set(_CALL.findall(reference)):
        return "wrong call"
    named = [next(group for group in match if group) for match in _NAMED.findall(source)]
    if any(value not in output for value in named if value in reference):
        return "missing value"
    return "other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--constrain", default="none", choices=["none", "python", "grammar"])
    parser.add_argument("--examples", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    translator = Translator.from_run_dir(Path(args.run))
    config = translator.run.config
    corpus = run_corpus(translator.run)
    examples = corpus.examples[args.split]
    found = translator.generate([e.src for e in examples], beam_size=args.beam, constrain=args.constrain)
    tokenize, unit = corpus.tgt_tokenizer.tokenize, config.data.code_unit or "program"
    limit = supported_max_len(translator.run.model, config.decode.max_len)  # the search's; not a constraint's dead end
    classes = [classify(g.text, e.tgt, e.src, tokenize=tokenize, unit=unit, finished=g.finished or len(g.tokens) < limit)
               for g, e in zip(found, examples)]
    counts = Counter(classes)
    print("command: python bench/error_analysis.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    print(f"{len(examples)} examples of {args.split}\n\n| class | count | share |\n|---|---|---|")
    for name in CLASSES:
        print(f"| {name} | {counts[name]} | {counts[name] / len(examples):.1%} |")
    print_runaways(examples, found, classes, tokenize)
    for name in CLASSES[1:]:
        shown = [(e, g) for e, g, c in zip(examples, found, classes) if c == name][: args.examples]
        for example, generation in shown:
            print(f"\n[{name}] {example.src[:90]}\n   wrote:     {generation.text[:110]}\n   reference: {example.tgt[:110]}")
    return 0


def repeats_a_literal(source: str) -> bool:
    """Whether a number or quoted string occurs twice in ``source`` (where attention by content
    cannot tell the two places apart)."""
    literals = _LITERAL.findall(source)
    return len(set(literals)) < len(literals)


def print_runaways(examples, found, classes, tokenize) -> None:
    """Token BLEU with and without the outputs that ran to max_len, and which inputs those were."""
    kept = [i for i, name in enumerate(classes) if name != "ran to max_len"]
    if len(kept) == len(classes):
        return
    outputs, references = [tokenize(g.text) for g in found], [tokenize(e.tgt) for e in examples]
    ran = [i for i, name in enumerate(classes) if name == "ran to max_len"]
    print(f"\ntoken BLEU {token_bleu(outputs, references):.2f}; without the {len(ran)} outputs that ran to max_len "
          f"{token_bleu([outputs[i] for i in kept], [references[i] for i in kept]):.2f}")
    print(f"inputs with a literal twice: {sum(repeats_a_literal(examples[i].src) for i in ran) / len(ran):.1%} of those "
          f"{len(ran)}, {sum(repeats_a_literal(e.src) for e in examples) / len(examples):.1%} of all inputs; their mean "
          f"length {sum(len(examples[i].src.split()) for i in ran) / len(ran):.1f} words, "
          f"all inputs' {sum(len(e.src.split()) for e in examples) / len(examples):.1f}")


if __name__ == "__main__":
    sys.exit(main())
