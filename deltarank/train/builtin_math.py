"""Built-in math data: generated problems with checkable integer answers, in GSM8K's answer format.

Problem i is drawn from `random.Random("deltarank-math/<i>")` (string seeds hash with SHA-512, so the stream
is the same on every machine and Python version). A problem is held out when the SHA-256 of its question text
falls in the lowest `TEST_PERCENT` of the hash range: the same question can never be in both splits.

Kinds: one- and two-operation arithmetic, and multi-step word problems (shopping, wages, sharing, travel,
ages, discounts, fencing, savings). Each solution shows its steps and ends with `#### <answer>`.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterator

TEST_PERCENT = 10
ANSWER_MARK = "####"
ANSWER_RE = re.compile(r"####\s*(-?[\d,]*\.?\d+)")
NAMES = ("Ana", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Leo")
ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "stamps", "shells")

Problem = tuple[str, list[str], int]  # (question, solution steps, answer)


def _arithmetic(rng: random.Random) -> Problem:
    a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 12)
    kind = rng.randrange(4)
    if kind == 0:
        return f"What is {a} + {b}?", [f"{a} + {b} = {a + b}"], a + b
    if kind == 1:
        big, small = max(a, b), min(a, b)
        return f"What is {big} - {small}?", [f"{big} - {small} = {big - small}"], big - small
    if kind == 2:
        return f"What is {a} * {c}?", [f"{a} * {c} = {a * c}"], a * c
    steps = [f"{b} * {c} = {b * c}", f"{a} + {b * c} = {a + b * c}"]
    return f"What is {a} + {b} * {c}?", steps, a + b * c


def _shopping(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    packs, each = rng.randint(2, 9), rng.randint(3, 12)
    total = packs * each
    given = rng.randint(1, total - 1)
    question = (
        f"{name} buys {packs} packs of {item} with {each} {item} in each pack and gives {given} {item} "
        f"to a friend. How many {item} does {name} have left?"
    )
    steps = [
        f"{name} buys {packs} * {each} = {total} {item}.",
        f"{name} has {total} - {given} = {total - given} left.",
    ]
    return question, steps, total - given


def _wages(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    rate, hours, days = rng.randint(8, 25), rng.randint(2, 8), rng.randint(2, 6)
    earned = rate * hours * days
    spent = rng.randint(1, earned - 1)
    question = (
        f"{name} earns ${rate} an hour and works {hours} hours a day for {days} days, then spends ${spent}. "
        "How many dollars are left?"
    )
    steps = [
        f"Each day pays {rate} * {hours} = {rate * hours} dollars.",
        f"{days} days pay {rate * hours} * {days} = {earned} dollars.",
        f"After spending, {earned} - {spent} = {earned - spent} dollars are left.",
    ]
    return question, steps, earned - spent


def _sharing(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    friends, share = rng.randint(2, 8), rng.randint(2, 15)
    total = friends * share
    had = rng.randint(1, total - 1)
    question = (
        f"{name} has {had} {item} and buys {total - had} more, then shares all of them equally among "
        f"{friends} friends. How many {item} does each friend get?"
    )
    steps = [
        f"{name} has {had} + {total - had} = {total} {item}.",
        f"Each friend gets {total} / {friends} = {share}.",
    ]
    return question, steps, share


def _travel(rng: random.Random) -> Problem:
    v, t, w, u = rng.randint(20, 90), rng.randint(1, 5), rng.randint(20, 90), rng.randint(1, 5)
    question = (
        f"A train travels at {v} km per hour for {t} hours, then at {w} km per hour for {u} hours. "
        "How many kilometers does it travel in total?"
    )
    steps = [f"First part: {v} * {t} = {v * t} km.", f"Second part: {w} * {u} = {w * u} km."]
    steps.append(f"Total: {v * t} + {w * u} = {v * t + w * u} km.")
    return question, steps, v * t + w * u


def _ages(rng: random.Random) -> Problem:
    name, other = rng.sample(NAMES, 2)
    age, times, years = rng.randint(3, 15), rng.randint(2, 5), rng.randint(1, 20)
    question = (
        f"{name} is {age} years old. {other} is {times} times as old as {name}. "
        f"How old will {other} be in {years} years?"
    )
    steps = [
        f"{other} is {age} * {times} = {age * times} years old.",
        f"In {years} years: {age * times} + {years} = {age * times + years}.",
    ]
    return question, steps, age * times + years


def _discount(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    price, percent, count = rng.randint(2, 20) * 10, rng.choice((10, 20, 25, 50)), rng.randint(2, 6)
    off = price * percent // 100
    question = (
        f"A shirt costs ${price} and is on sale for {percent}% off. {name} buys {count} shirts. "
        f"How many dollars does {name} pay?"
    )
    steps = [
        f"The discount is {price} * {percent} / 100 = {off} dollars.",
        f"One shirt costs {price} - {off} = {price - off} dollars.",
        f"{count} shirts cost {price - off} * {count} = {(price - off) * count} dollars.",
    ]
    return question, steps, (price - off) * count


def _fencing(rng: random.Random) -> Problem:
    length, width, cost = rng.randint(3, 40), rng.randint(3, 40), rng.randint(2, 15)
    perimeter = 2 * (length + width)
    question = (
        f"A garden is {length} meters long and {width} meters wide. Fencing costs ${cost} per meter. "
        "How many dollars does it cost to fence the whole garden?"
    )
    steps = [
        f"The perimeter is 2 * ({length} + {width}) = {perimeter} meters.",
        f"The cost is {perimeter} * {cost} = {perimeter * cost} dollars.",
    ]
    return question, steps, perimeter * cost


def _savings(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    weekly, weeks, price = rng.randint(5, 30), rng.randint(3, 12), rng.randint(10, 100)
    saved = weekly * weeks
    price = min(price, saved - 1)
    question = (
        f"{name} saves ${weekly} every week for {weeks} weeks and then buys a game for ${price}. "
        f"How many dollars does {name} have now?"
    )
    steps = [
        f"{name} saves {weekly} * {weeks} = {saved} dollars.",
        f"After the game: {saved} - {price} = {saved - price} dollars.",
    ]
    return question, steps, saved - price


GENERATORS: tuple[Callable[[random.Random], Problem], ...] = (
    _arithmetic,
    _arithmetic,
    _shopping,
    _wages,
    _sharing,
    _travel,
    _ages,
    _discount,
    _fencing,
    _savings,
)


def problem(index: int) -> Problem:
    """The index-th generated problem (the same on every machine)."""
    rng = random.Random(f"deltarank-math/{index}")
    return rng.choice(GENERATORS)(rng)


def split_of(question: str) -> str:
    """`test` for about `TEST_PERCENT`% of questions chosen by hashing the text, else `train`."""
    digest = hashlib.sha256(f"deltarank-math:{question}".encode()).digest()
    return "test" if int.from_bytes(digest[:4], "big") % 100 < TEST_PERCENT else "train"


def records(split: str) -> Iterator[dict[str, str]]:
    """Endless `{"prompt", "completion", "answer", "source"}` records of one split, without repeats."""
    seen: set[str] = set()
    index = 0
    while True:
        question, steps, answer = problem(index)
        index += 1
        if question in seen or split_of(question) != split:
            continue
        seen.add(question)
        completion = " " + "\n".join(steps) + f"\n{ANSWER_MARK} {answer}"
        yield {
            "prompt": f"Question: {question}\nAnswer:",
            "completion": completion,
            "answer": str(answer),
            "source": f"math/{index - 1}",
        }


def extract_answer(text: str) -> str | None:
    """The number after the first `####` in a generated solution (commas removed), or None."""
    match = ANSWER_RE.search(text)
    if match is None:
        return None
    number = match.group(1).replace(",", "")
    if "." in number and float(number).is_integer():
        number = str(int(float(number)))
    return number


def is_correct(generated: str, answer: str) -> bool:
    """Exact match of the extracted final answer against the reference answer."""
    return extract_answer(generated) == answer.strip()
