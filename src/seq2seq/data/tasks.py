"""Built-in generated data sets: English -> one line of Python (``nl2code``) and a reversal toy.

``generate_nl2code`` draws descriptions from template families. Each family has several
phrasings; names (from :data:`NAMES`), string literals (:data:`WORDS`) and integers 0-99
appear verbatim in the description, so a model can align and copy them. Descriptions are
lower case with punctuation as separate words; every target passes ``ast.parse``.

Families, by the length bucket they are drawn for (WordTokenizer tokens of the source):

- short (< 12): assign_literal, aug_assign, print_value, length, string_case, list_mutate,
  list_query, dict_get, dict_views, dict_set, slicing, range_list, conversion, aggregate,
  isinstance_check
- medium (12-25): string_args, format_string, sorted_key, zip_enumerate, library_call,
  conditional_expr, list_comp, dict_comp, set_comp, arith_infix, counter_update, for_print
- long (> 25): long_list, long_dict, arith_chain, comp_pipeline, string_pipeline,
  long_condition, literal_aggregate. Their code depends on details spread over the whole
  description (5-9 literals, 4-7 chained operations, three-way conditions), which is what
  separates an attention decoder from one that sees a single fixed context vector.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator, Sequence

from seq2seq.data.example import Example

__all__ = ["BUILTIN_STREAMS", "BUILTIN_TASKS", "NAMES", "WORDS", "generate_nl2code", "generate_reverse", "stream_nl2code"]

NAMES = (
    "total count counts scores user_names x y z items values result data numbers words text "
    "name names prices ages matrix row rows line lines key keys value index size width height "
    "temp buffer queue stack records config settings options payload message path filename url "
    "tokens letters grades weights totals squares evens odds left right low high limit step "
    "offset first last best item n m"
).split()
WORDS = (
    "apple banana cherry hello world alpha beta gamma delta red green blue north south east west "
    "spam eggs foo bar baz cat dog bird fish lemon mango python code error warning info debug "
    "admin guest user yes no ok summer winter"
).split()
_SEPARATORS = {",": "commas", "-": "dashes", ":": "colons", ";": "semicolons", "|": "pipes"}
_COMPARISONS = {"greater than": ">", "less than": "<", "at least": ">=", "at most": "<=",
                "equal to": "==", "not equal to": "!="}
_INFIX = {"plus": "+", "minus": "-", "times": "*", "divided by": "/", "modulo": "%"}
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "//": 2, "%": 2, "**": 3}
# (description, python) pairs for element-wise transformations of a loop variable v.
_TRANSFORMS = (("squared", "v ** 2"), ("doubled", "v * 2"), ("halved", "v / 2"),
               ("negated", "-v"), ("as a string", "str(v)"), ("modulo {k}", "v % {k}"),
               ("plus {k}", "v + {k}"), ("times {k}", "v * {k}"), ("minus {k}", "v - {k}"))
_CASES = (("upper case", "upper"), ("lower case", "lower"), ("title case", "title"),
          ("without surrounding whitespace", "strip"), ("without leading whitespace", "lstrip"),
          ("with a capital first letter", "capitalize"))
_TYPES = (("an integer", "int"), ("a string", "str"), ("a list", "list"),
          ("a dictionary", "dict"), ("a float", "float"), ("a tuple", "tuple"))
_REDUCERS = (("sum", "sum"), ("largest element", "max"), ("smallest element", "min"),
             ("maximum", "max"), ("minimum", "min"))


class _Draw:
    """Random choices for one example, all from one seeded ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, options: Sequence):
        return self.rng.choice(options)

    def coin(self, p: float = 0.5) -> bool:
        return self.rng.random() < p

    def names(self, k: int) -> list[str]:
        return self.rng.sample(NAMES, k)

    def name(self) -> str:
        return self.rng.choice(NAMES)

    def words(self, k: int) -> list[str]:
        return [f"'{w}'" for w in self.rng.sample(WORDS, k)]

    def word(self) -> str:
        return f"'{self.rng.choice(WORDS)}'"

    def nums(self, k: int, lo: int = 0, hi: int = 99) -> list[str]:
        return [str(self.rng.randint(lo, hi)) for _ in range(k)]

    def num(self, lo: int = 0, hi: int = 99) -> str:
        return str(self.rng.randint(lo, hi))

    def literals(self, k: int) -> list[str]:
        """``k`` integers or ``k`` quoted words (one kind per call)."""
        return self.words(k) if self.coin(0.35) else self.nums(k)

    def transform(self) -> tuple[str, str]:
        text, code = self.pick(_TRANSFORMS)
        k = self.num(2, 9)
        return text.format(k=k), code.format(k=k)

    def comparison(self, var: str) -> tuple[str, str]:
        text, op = self.pick(list(_COMPARISONS.items()))
        k = self.num()
        return f"{text} {k}", f"{var} {op} {k}"


def _enum(items: Sequence[str]) -> str:
    """``a , b and c``: the spaced list style of all descriptions."""
    return items[0] if len(items) == 1 else " , ".join(items[:-1]) + " and " + items[-1]


def _slots(d: _Draw) -> dict[str, str]:
    """Every value a template row may use; rows are ``str.format`` templates over these."""
    a, b, c = d.names(3)
    v1, v2, v3 = d.literals(3)
    w1, w2 = d.words(2)
    (cmp_text, cmp), (acmp_text, acmp) = d.comparison("v"), d.comparison(a)
    t_text, t = d.transform()
    sep, sep_text = d.pick(list(_SEPARATORS.items()))
    (case_text, case), (agg_text, agg) = d.pick(_CASES), d.pick(_REDUCERS)
    (type_text, type_), (type2_text, type2) = d.rng.sample(_TYPES, 2)
    return dict(
        a=a, b=b, c=c, v1=v1, v2=v2, v3=v3, w1=w1, w2=w2, word=d.pick(WORDS), i=d.num(0, 9),
        j=d.num(10, 30), k=d.num(1, 9), n=d.num(), s=d.num(2, 5), base=d.pick(["2", "8", "16"]),
        cmp_text=cmp_text, cmp=cmp, acmp_text=acmp_text, acmp=acmp, t_text=t_text, t=t,
        sep=sep, sep_text=sep_text, case_text=case_text, case=case, agg_text=agg_text, agg=agg,
        type_text=type_text, type=type_, type2_text=type2_text, type2=type2,
        view=d.pick(["keys", "values", "items"]),
    )


Family = Callable[[_Draw], tuple[str, str]]

# One family = rows of (description, code) templates over the slots above. Code templates
# are str.format templates too, so a literal brace is written twice ("{{").
_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    # ------------------------------------------------------------------------- short
    "assign_literal": (("set {a} to {n}", "{a} = {n}"), ("assign {n} to {a}", "{a} = {n}"),
                       ("let {a} be the string {w1}", "{a} = {w1}"),
                       ("store the string {w1} in {a}", "{a} = {w1}")),
    "aug_assign": (("increase {a} by {k}", "{a} += {k}"), ("add {k} to {a}", "{a} += {k}"),
                   ("decrease {a} by {k}", "{a} -= {k}"), ("subtract {k} from {a}", "{a} -= {k}"),
                   ("multiply {a} by {k}", "{a} *= {k}"), ("divide {a} by {k}", "{a} /= {k}"),
                   ("floor divide {a} by {k}", "{a} //= {k}"),
                   ("raise {a} to the power {k}", "{a} **= {k}")),
    "print_value": (("print {a}", "print({a})"), ("display the value of {a}", "print({a})"),
                    ("print {a} and {b}", "print({a}, {b})"), ("print the string {w1}", "print({w1})"),
                    ("print {w1} followed by {a}", "print({w1}, {a})")),
    "length": (("get the length of {a}", "len({a})"),
               ("store the number of elements of {a} in {b}", "{b} = len({a})"),
               ("count the distinct elements of {a}", "len(set({a}))"),
               ("set {b} to the size of {a}", "{b} = len({a})")),
    "string_case": (("{a} in {case_text}", "{a}.{case}()"),
                    ("store {a} in {case_text} in {b}", "{b} = {a}.{case}()"),
                    ("convert {a} to {case_text}", "{a} = {a}.{case}()")),
    "list_mutate": (("append {v1} to {a}", "{a}.append({v1})"),
                    ("add {v1} to the end of {a}", "{a}.append({v1})"),
                    ("extend {a} with {b}", "{a}.extend({b})"),
                    ("insert {v1} at position {i} of {a}", "{a}.insert({i}, {v1})"),
                    ("remove the last element of {a}", "{a}.pop()"),
                    ("pop the element at index {i} from {a}", "{a}.pop({i})"),
                    ("sort {a} in place", "{a}.sort()"),
                    ("sort {a} in descending order in place", "{a}.sort(reverse=True)"),
                    ("reverse {a} in place", "{a}.reverse()"),
                    ("remove the first {v1} from {a}", "{a}.remove({v1})")),
    "list_query": (("find the index of {v1} in {a}", "{a}.index({v1})"),
                   ("store the position of {v1} in {a} in {b}", "{b} = {a}.index({v1})"),
                   ("count how many times {v1} occurs in {a}", "{a}.count({v1})"),
                   ("set {b} to the number of times {v1} appears in {a}", "{b} = {a}.count({v1})"),
                   ("check whether {v1} is in {a}", "{v1} in {a}")),
    "dict_get": (("get key {w1} of {a} with default {n}", "{a}.get({w1}, {n})"),
                 ("look up {w1} in {a} , or {n} if missing", "{a}.get({w1}, {n})"),
                 ("set {b} to the entry {w1} of {a}", "{b} = {a}[{w1}]"),
                 ("get the value for {w1} in {a}", "{a}.get({w1})")),
    "dict_views": (("list the {view} of {a}", "list({a}.{view}())"),
                   ("store the {view} of {a} in {b}", "{b} = list({a}.{view}())"),
                   ("print the sorted {view} of {a}", "print(sorted({a}.{view}()))")),
    "dict_set": (("set key {w1} of {a} to {v1}", "{a}[{w1}] = {v1}"),
                 ("map {w1} to {v1} in {a}", "{a}[{w1}] = {v1}"),
                 ("delete key {w1} from {a}", "del {a}[{w1}]"),
                 ("update {a} with {b}", "{a}.update({b})"),
                 ("set {w1} in {a} to {v1} unless present", "{a}.setdefault({w1}, {v1})")),
    "slicing": (("the first {i} elements of {a}", "{a}[:{i}]"),
                ("the last {i} elements of {a}", "{a}[-{i}:]"),
                ("every element of {a} after index {i}", "{a}[{i} + 1:]"),
                ("{a} from index {i} to {j}", "{a}[{i}:{j}]"),
                ("every {s} th element of {a}", "{a}[::{s}]"),
                ("{a} from {i} to {j} with step {s}", "{a}[{i}:{j}:{s}]"),
                ("{a} reversed", "{a}[::-1]"), ("{a} without its last {i} elements", "{a}[:-{i}]")),
    "range_list": (("a list of the numbers from {i} up to {j}", "list(range({i}, {j}))"),
                   ("set {a} to the integers below {n}", "{a} = list(range({n}))"),
                   ("numbers from {i} below {j} in steps of {s}", "list(range({i}, {j}, {s}))")),
    "conversion": (("convert {a} to an integer", "int({a})"),
                   ("store {a} as a string in {b}", "{b} = str({a})"),
                   ("convert {a} to a float", "float({a})"),
                   ("round {a} to {s} decimal places", "round({a}, {s})"),
                   ("set {b} to the absolute value of {a}", "{b} = abs({a})"),
                   ("parse {a} as a base {base} integer", "int({a}, {base})")),
    "aggregate": (("compute the {agg_text} of {a}", "{agg}({a})"),
                  ("store the {agg_text} of {a} in {b}", "{b} = {agg}({a})"),
                  ("print the {agg_text} of {a}", "print({agg}({a}))")),
    "isinstance_check": (("check whether {a} is {type_text}", "isinstance({a}, {type})"),
                         ("check if {a} is {type_text} or {type2_text}",
                          "isinstance({a}, ({type}, {type2}))"),
                         ("test that {a} is not {type_text}", "not isinstance({a}, {type})")),
    # ------------------------------------------------------------------------ medium
    "string_args": (
        ("replace every occurrence of {w1} in {a} with {w2} and store the result in {b}",
         "{b} = {a}.replace({w1}, {w2})"),
        ("split the string {a} on {sep_text} and store the parts in {b}", "{b} = {a}.split('{sep}')"),
        ("split {a} into words on whitespace and assign the list to {b}", "{b} = {a}.split()"),
        ("join the strings in {a} with {sep_text} between them and store it in {b}",
         "{b} = '{sep}'.join({a})"),
        ("check whether the string {a} starts with {w1} or ends with {w2}",
         "{a}.startswith({w1}) or {a}.endswith({w2})"),
        ("set {b} to the position of the first {w1} inside the string {a}", "{b} = {a}.find({w1})")),
    "format_string": (
        ("build an f-string with the word {word} , a colon and the value of {a} and store it in {b}",
         "{b} = f'{word}: {{{a}}}'"),
        ("format {a} with {s} decimal places using an f-string and print the result",
         "print(f'{{{a}:.{s}f}}')"),
        ("use str.format to join {a} and {b} with a dash and store the text in {c}",
         "{c} = '{{}}-{{}}'.format({a}, {b})"),
        ("print an f-string that shows {a} , then the word {word} , then {b}",
         "print(f'{{{a}}} {word} {{{b}}}')")),
    "sorted_key": (
        ("sort the strings in {a} by their length and store the sorted list in {b}",
         "{b} = sorted({a}, key=len)"),
        ("make a copy of {a} sorted from largest to smallest and call it {b}",
         "{b} = sorted({a}, reverse=True)"),
        ("sort the tuples in {a} by their element at index {i} in descending order",
         "sorted({a}, key=lambda t: t[{i}], reverse=True)"),
        ("find the element of {a} whose item at index {i} is largest and store it in {b}",
         "{b} = max({a}, key=lambda t: t[{i}])"),
        ("sort {a} in place ignoring case , then print {a}", "{a}.sort(key=str.lower); print({a})")),
    "zip_enumerate": (
        ("pair up the elements of {a} and {b} into a list of tuples named {c}",
         "{c} = list(zip({a}, {b}))"),
        ("build a dictionary {c} that maps each element of {a} to the matching element of {b}",
         "{c} = dict(zip({a}, {b}))"),
        ("list the index and element of every item in {a} , counting from {i}",
         "list(enumerate({a}, {i}))"),
        ("for each index i and element v of {a} , print i and v",
         "for i, v in enumerate({a}): print(i, v)"),
        ("add up the products of matching elements of {a} and {b} and store it in {c}",
         "{c} = sum(p * q for p, q in zip({a}, {b}))")),
    "conditional_expr": (
        ("set {b} to {v1} if {a} is {acmp_text} , otherwise to {v2}", "{b} = {v1} if {acmp} else {v2}"),
        ("{b} should be {v1} when {a} is {acmp_text} and {v2} in all other cases",
         "{b} = {v1} if {acmp} else {v2}"),
        ("print {b} if {a} is {acmp_text} , else print {c}", "print({b} if {acmp} else {c})")),
    "list_comp": (
        ("make a list {b} of every element of {a} {t_text}", "{b} = [{t} for v in {a}]"),
        ("build a list {b} with each element of {a} that is {cmp_text} , {t_text}",
         "{b} = [{t} for v in {a} if {cmp}]"),
        ("keep only the elements of {a} that are {cmp_text} and store them in {b}",
         "{b} = [v for v in {a} if {cmp}]"),
        ("collect the even numbers of {a} {t_text} into a new list {b}",
         "{b} = [{t} for v in {a} if v % 2 == 0]")),
    "dict_comp": (
        ("build a dictionary {b} mapping each word in {a} to its length",
         "{b} = {{w: len(w) for w in {a}}}"),
        ("make a dictionary {b} from {a} with every value {t_text}",
         "{b} = {{k: {t} for k, v in {a}.items()}}"),
        ("keep the entries of the dictionary {a} whose value is {cmp_text} in a new dictionary {b}",
         "{b} = {{k: v for k, v in {a}.items() if {cmp}}}"),
        ("invert the dictionary {a} so that values map to keys and call it {b}",
         "{b} = {{v: k for k, v in {a}.items()}}")),
    "set_comp": (
        ("the set of first letters of the words in {a} , stored in {b}", "{b} = {{w[0] for w in {a}}}"),
        ("build the set {b} of the distinct elements of {a} {t_text}", "{b} = {{{t} for v in {a}}}"),
        ("make a set {b} of the elements of {a} that are {cmp_text}",
         "{b} = {{v for v in {a} if {cmp}}}")),
    "counter_update": (
        ("increase the count stored under {w1} in {a} by {k} , starting from 0 if it is missing",
         "{a}[{w1}] = {a}.get({w1}, 0) + {k}"),
        ("append {b} to the list stored under {w1} in {a} , creating an empty list if needed",
         "{a}.setdefault({w1}, []).append({b})"),
        ("build a dictionary {b} that maps each element of {a} to how often it occurs in {a}",
         "{b} = {{v: {a}.count(v) for v in {a}}}")),
    "for_print": (
        ("for every element v of {a} , print v {t_text}", "for v in {a}: print({t})"),
        ("loop over {a} and add each element {t_text} to the list {b}",
         "for v in {a}: {b}.append({t})"),
        ("print each key of the dictionary {a} together with its value",
         "for k, v in {a}.items(): print(k, v)")),
}
_MEDIUM_TABLES = ("string_args", "format_string", "sorted_key", "zip_enumerate", "conditional_expr",
                  "list_comp", "dict_comp", "set_comp", "counter_update", "for_print")


def _from_table(d: _Draw, *, rows: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    """One row of a template table, filled with fresh slot values."""
    text, code = d.pick(rows)
    slots = _slots(d)
    return text.format(**slots), code.format(**slots)


def _table_family(name: str) -> Family:
    family = functools.partial(_from_table, rows=_TABLES[name])
    family.__name__ = name  # type: ignore[attr-defined]  # for logs and error messages
    return family


def library_call(d: _Draw) -> tuple[str, str]:
    """A stdlib call (math, os.path, json, re, random), sometimes with its import."""
    a, b = d.names(2)
    w, k, j = d.word(), d.num(1, 8), d.num(10, 99)
    text, module, call = d.pick([
        (f"the square root of {a}", "math", f"math.sqrt({a})"),
        (f"{a} rounded down to an integer", "math", f"math.floor({a})"),
        (f"{a} rounded up to an integer", "math", f"math.ceil({a})"),
        (f"the path made of {a} and the file name {w}", "os", f"os.path.join({a}, {w})"),
        (f"whether the file at {a} exists", "os", f"os.path.exists({a})"),
        (f"{a} serialized as json with an indent of {k}", "json", f"json.dumps({a}, indent={k})"),
        (f"the object parsed from the json text {a}", "json", f"json.loads({a})"),
        (f"all the numbers found in {a} by a regular expression", "re",
         f"re.findall(r'\\d+', {a})"),
        (f"a random element of {a}", "random", f"random.choice({a})"),
        (f"a random integer between {k} and {j}", "random", f"random.randint({k}, {j})"),
    ])
    return d.pick([(f"import {module} and store {text} in {b}", f"import {module}; {b} = {call}"),
                   (f"use the {module} module to compute {text}", call),
                   (f"set {b} to {text} , using the {module} module", f"{b} = {call}")])


def arith_infix(d: _Draw) -> tuple[str, str]:
    """2-4 operands with mixed operators; Python's precedence matches the English reading."""
    k = d.rng.randint(2, 4)
    operands = [d.name() if d.coin(0.6) else d.num(1) for _ in range(k)]
    ops = [d.pick(list(_INFIX.items())) for _ in range(k - 1)]
    text = operands[0] + "".join(f" {w} {o}" for (w, _), o in zip(ops, operands[1:]))
    code = operands[0] + "".join(f" {c} {o}" for (_, c), o in zip(ops, operands[1:]))
    target = d.name()
    return d.pick([(f"compute {text} and store the result in {target}", f"{target} = {code}"),
                   (f"set {target} to the value of {text}", f"{target} = {code}"),
                   (f"print the result of {text}", f"print({code})")])


# ------------------------------------------------------------------------------ long families


def long_list(d: _Draw) -> tuple[str, str]:
    """A list literal of 6-9 elements, then one operation on it."""
    a, b = d.names(2)
    items = d.literals(d.rng.randint(6, 9))
    v, i = d.literals(1)[0], d.num(1, 5)
    final_text, final = d.pick([("sort it in descending order", f"{a}.sort(reverse=True)"),
                                (f"append {v} to the end of it", f"{a}.append({v})"),
                                (f"store its last {i} elements in {b}", f"{b} = {a}[-{i}:]"),
                                (f"remove the element at index {i}", f"{a}.pop({i})"),
                                ("print how many elements it has", f"print(len({a}))")])
    lead = d.pick([f"please create a new list called {a} that holds the values",
                   f"first make a list named {a} containing the elements",
                   f"define {a} as a list whose elements are"])
    return (f"{lead} {_enum(items)} in this order , and after that {final_text}",
            f"{a} = [{', '.join(items)}]; {final}")


def long_dict(d: _Draw) -> tuple[str, str]:
    """A dict literal of 3-5 string -> int pairs, then one operation on it."""
    a, b = d.names(2)
    new_key, *keys = d.words(d.rng.randint(4, 6))
    values = d.nums(len(keys))
    k, v = d.pick(keys), d.num()
    final_text, final = d.pick([
        (f"print the value stored under {k}", f"print({a}[{k}])"),
        (f"store the value for {new_key} or {v} if missing in {b}", f"{b} = {a}.get({new_key}, {v})"),
        (f"add the key {new_key} with the value {v}", f"{a}[{new_key}] = {v}"),
        ("print its keys in sorted order", f"print(sorted({a}))")])
    pairs = _enum([f"{key} to {value}" for key, value in zip(keys, values)])
    lead = d.pick([f"create a dictionary named {a} that maps {pairs}",
                   f"build a dictionary {a} in which {pairs.replace(' to ', ' is mapped to ')}"])
    code_pairs = ", ".join(f"{key}: {value}" for key, value in zip(keys, values))
    return f"{lead} , and then {final_text}", f"{a} = {{{code_pairs}}}; {final}"


_CHAIN_STEPS = (("add {o}", "+"), ("subtract {o}", "-"), ("multiply the result by {o}", "*"),
                ("divide the result by {o}", "/"), ("take the remainder modulo {o}", "%"),
                ("floor divide it by {o}", "//"), ("raise it to the power {o}", "**"))


def arith_chain(d: _Draw) -> tuple[str, str]:
    """4-7 operations applied left to right; parentheses where Python's precedence differs."""
    start, target = d.names(2)
    texts, code, top = [], start, 4  # top: precedence of the outermost operator (4 = atom)
    for _ in range(d.rng.randint(4, 7)):
        text, op = d.pick(_CHAIN_STEPS)
        operand = d.pick(["2", "3"]) if op == "**" else (d.name() if d.coin(0.4) else d.num(1))
        if top < _PRECEDENCE[op] or (op == "**" and top == 3):
            code = f"({code})"  # English order is left to right; Python's is by precedence
        code, top = f"{code} {op} {operand}", _PRECEDENCE[op]
        texts.append(text.format(o=operand))
    steps = " , ".join(texts[:-1]) + " , and finally " + texts[-1]
    lead = d.pick([f"start with {start}", f"take the value of {start}", f"begin from {start}"])
    return f"{lead} , {steps} , then store the final value in {target}", f"{target} = {code}"


_AGGREGATES = (("sort the results in descending order", "sorted({}, reverse=True)"),
               ("add them all up", "sum({})"), ("keep only the largest one", "max({})"),
               ("count how many there are", "len({})"),
               ("remove duplicates by making a set", "set({})"))


def comp_pipeline(d: _Draw) -> tuple[str, str]:
    """Filter with two conditions, transform, aggregate: one comprehension inside a call."""
    a, b = d.names(2)
    (c1_text, c1), (c2_text, c2) = d.comparison("v"), d.comparison("v")
    joiner, (t_text, expr) = d.pick(["and", "or"]), d.transform()
    agg_text, agg = d.pick(_AGGREGATES)
    code = agg.format(f"[{expr} for v in {a} if {c1} {joiner} {c2}]")
    select = d.pick([f"from the list {a} take every element that is {c1_text} {joiner} {c2_text}",
                     f"go through {a} and keep the values {c1_text} {joiner} {c2_text}"])
    return (f"{select} , replace it by the element {t_text} , then {agg_text} and "
            f"store the result in {b}", f"{b} = {code}")


def string_pipeline(d: _Draw) -> tuple[str, str]:
    """Join 3-6 string literals with a separator, then one more string method."""
    a = d.name()
    words, (w1, w2) = d.words(d.rng.randint(3, 6)), d.words(2)
    sep, sep_text = d.pick(list(_SEPARATORS.items()))
    final_text, final = d.pick([
        ("convert the result to upper case", ".upper()"),
        ("convert the result to title case", ".title()"),
        (f"replace every {w1} in the result with {w2}", f".replace({w1}, {w2})"),
        (f"split the result again on {sep_text}", f".split('{sep}')")])
    join = d.pick([f"join the words {_enum(words)} into one string with {sep_text} between them",
                   f"put {sep_text} between the words {_enum(words)} to make one string"])
    return (f"{join} , {final_text} , and store the final string in the variable {a}",
            f"{a} = '{sep}'.join([{', '.join(words)}]){final}")


def long_condition(d: _Draw) -> tuple[str, str]:
    """A three-way conditional expression over two names."""
    a, b, c = d.names(3)
    (c1_text, c1), (c3_text, c3) = d.comparison(a), d.comparison(a)
    c2_text, c2 = d.comparison(f"len({b})")
    v1, v2, v3 = d.literals(3)
    joiner = d.pick(["and", "or"])
    rest = d.pick([f"and in every other case set it to {v3}", f"and to {v3} when neither holds"])
    return (f"if {a} is {c1_text} {joiner} the length of {b} is {c2_text} , set {c} to {v1} ; "
            f"otherwise , if {a} is {c3_text} , set {c} to {v2} , {rest}",
            f"{c} = {v1} if {c1} {joiner} {c2} else {v2} if {c3} else {v3}")


def literal_aggregate(d: _Draw) -> tuple[str, str]:
    """Reduce a transformed list of 5-9 integer literals and print it with a label."""
    numbers, w = d.nums(d.rng.randint(5, 9)), d.word()
    name, func = d.pick([("maximum", "max"), ("minimum", "min"), ("sum", "sum")])
    t_text, expr = d.transform()
    lead = d.pick([f"compute the {name} of the numbers {_enum(numbers)}",
                   f"take the numbers {_enum(numbers)} and find their {name}"])
    return (f"{lead} after each of them is {t_text} , and print the result together with "
            f"the string {w}", f"print({func}([{expr} for v in [{', '.join(numbers)}]]), {w})")


# ------------------------------------------------------------------------------- generation

_FAMILIES: tuple[tuple[Family, ...], ...] = (
    tuple(_table_family(name) for name in _TABLES if name not in _MEDIUM_TABLES),
    (*(_table_family(name) for name in _MEDIUM_TABLES), library_call, arith_infix),
    (long_list, long_dict, arith_chain, comp_pipeline, string_pipeline, long_condition,
     literal_aggregate),
)


def _draw_split(rng: random.Random, *, split: str, n: int, seen: set[str]) -> Iterator[Example]:
    """``n`` examples whose sources are not in ``seen`` (which is updated), one at a time."""
    d = _Draw(rng)
    drawn = 0
    for _ in range(50 * n + 1000):  # a bound, so an exhausted template space cannot hang
        if drawn == n:
            return
        src, tgt = rng.choice(rng.choice(_FAMILIES))(d)  # length bucket first, then family
        if src not in seen:
            seen.add(src)
            yield Example(src, tgt, origin=f"builtin:nl2code:{split}:{drawn}")
            drawn += 1
    if drawn < n:
        raise ValueError(f"could only draw {drawn} distinct {split} examples of {n}")


def stream_nl2code(
    *, seed: int = 1234, n_train: int = 20000, n_valid: int = 1000, n_test: int = 1000
) -> tuple[dict[str, list[Example]], Iterator[Example]]:
    """The built-in English -> Python task as ``({"valid", "test"} lists, the train examples one at a
    time)``, so that a corpus of millions of pairs need not be held (``seq2seq preprocess``).

    Deterministic in ``seed``. Test is drawn first, then valid, then train, each from its own
    ``random.Random``, so the test set does not change with ``n_train``; no source text
    occurs in two splits.
    """
    seen: set[str] = set()
    held_out = {}
    for split, n in (("test", n_test), ("valid", n_valid)):
        held_out[split] = list(_draw_split(random.Random(f"nl2code:{seed}:{split}"), split=split, n=n, seen=seen))
    train = _draw_split(random.Random(f"nl2code:{seed}:train"), split="train", n=n_train, seen=seen)
    return {"valid": held_out["valid"], "test": held_out["test"]}, train


def generate_nl2code(
    *, seed: int = 1234, n_train: int = 20000, n_valid: int = 1000, n_test: int = 1000
) -> dict[str, list[Example]]:
    """The built-in English -> Python task: ``{"train", "valid", "test"}`` lists of examples
    (:func:`stream_nl2code`, the train split drawn to the end)."""
    held_out, train = stream_nl2code(seed=seed, n_train=n_train, n_valid=n_valid, n_test=n_test)
    return {"train": list(train), **held_out}


def generate_reverse(
    *, seed: int = 0, n: int = 200, vocab_size: int = 10, min_len: int = 3, max_len: int = 8
) -> list[Example]:
    """Sanity task: ``"a b c"`` -> ``"c b a"`` over ``vocab_size`` symbols (overfitting tests)."""
    if vocab_size < 1 or not 1 <= min_len <= max_len:
        raise ValueError("need vocab_size >= 1 and 1 <= min_len <= max_len, got "
                         f"vocab_size={vocab_size}, min_len={min_len}, max_len={max_len}")
    letters = "abcdefghijklmnopqrstuvwxyz"
    symbols = list(letters[:vocab_size]) if vocab_size <= 26 else [f"s{i}" for i in range(vocab_size)]
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        seq = [rng.choice(symbols) for _ in range(rng.randint(min_len, max_len))]
        src, tgt = " ".join(seq), " ".join(reversed(seq))
        examples.append(Example(src, tgt, origin=f"builtin:reverse:{i}"))
    return examples


BUILTIN_TASKS: dict[str, Callable[..., dict[str, list[Example]]]] = {"nl2code": generate_nl2code}
# The same tasks with the train split drawn one example at a time (seq2seq preprocess).
BUILTIN_STREAMS: dict[str, Callable[..., tuple[dict[str, list[Example]], Iterator[Example]]]] = {"nl2code": stream_nl2code}
