"""The control (nonmember) split: plausible English generated from a seed, never published.

Each passage is built from sentence templates filled with words drawn by a
``random.Random`` seeded with ``f"{seed}:{index}"`` (string seeds are hashed with SHA-512,
so the text is identical on every platform and Python version). Invented place and person
names, 2026 dates and random combinations make it vanishingly unlikely that any model saw
these word sequences. The registers mimic the members (legal provisions, civic prose,
plain notes), so that the two splits differ in provenance more than in style; they still
differ in style, which is why the labels are presumptions (see docs/datasets.md).
"""

import random

_ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "pr", "r", "s", "st", "t",
           "tr", "v", "w", "z", "th", "sh", "ch"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "y"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "m", "nd", "rk", "st", "x"]
_PLACE_ENDINGS = ["ford", "ton", "wick", "mere", "dale", "bury", "haven", "field", "moor", "stead"]

_BODIES = ["Council", "Assembly", "Board of Stewards", "Water Commission", "Library Trust", "Harbour Authority",
           "Cooperative", "Guild of Surveyors", "Orchard Society", "Transit Office", "Archive Committee"]
_OFFICERS = ["Registrar", "Treasurer", "Warden", "Clerk", "Surveyor", "Archivist", "Steward", "Secretary"]
_THINGS = ["ledger", "seed bank", "ferry timetable", "grain store", "census of beehives", "map of the wetlands",
           "register of boats", "repair fund", "weather record", "rota of night watches", "meeting hall",
           "collection of letters", "set of tide tables", "budget for lanterns", "list of apprentices"]
_ADJECTIVES = ["annual", "provisional", "detailed", "public", "quarterly", "revised", "complete", "written",
               "shared", "modest", "careful", "temporary", "independent", "regular", "separate"]
_VERBS = ["review", "publish", "maintain", "audit", "approve", "amend", "inspect", "keep", "restore", "record",
          "distribute", "summarize", "examine", "update", "archive"]
_PAST = ["reviewed", "published", "maintained", "audited", "approved", "amended", "inspected", "restored",
         "recorded", "distributed", "summarized", "examined", "updated", "archived", "discussed"]
_PEOPLE = ["residents", "members", "delegates", "apprentices", "boat owners", "beekeepers", "teachers",
           "volunteers", "tenants", "growers", "visitors", "families"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]
_WEATHER = ["a late frost", "three weeks of rain", "an unusually dry spring", "strong easterly winds",
            "a flood on the lower road", "a mild winter", "heavy fog along the estuary"]
_CONNECTIVES = ["However", "In addition", "For this reason", "As a result", "Nevertheless", "At the same time",
                "In practice", "Accordingly"]


def _name(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                   for _ in range(syllables)).capitalize()


class _Context:
    """The invented world of one passage: a town, its body and a few people."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.town = _name(rng, 2) + rng.choice(_PLACE_ENDINGS)
        self.body = rng.choice(_BODIES)
        self.people = [f"{_name(rng, 2)} {_name(rng, rng.randint(2, 3))}" for _ in range(4)]
        self._decks: dict[str, list[str]] = {}

    def date(self) -> str:
        return f"{self.rng.randint(1, 28)} {self.rng.choice(_MONTHS)} 2026"

    def pick(self, words: list[str]) -> str:
        return self.rng.choice(words)

    def deal(self, deck: str, cards: list[str]) -> str:
        """Draw templates without replacement (reshuffled when used up): less verbatim repetition."""
        pile = self._decks.get(deck)
        if not pile:
            pile = self._decks[deck] = list(cards)
            self.rng.shuffle(pile)
        return pile.pop()


def _provision(c: _Context) -> str:
    templates = [
        "The {body} of {town} shall {verb} the {adj} {thing} before {date}, and shall deliver a copy to every "
        "{officer} who requests it in writing.",
        "No {officer} shall {verb} the {thing} without the consent of a majority of the {people} present at a "
        "meeting called for that purpose.",
        "Where the {thing} cannot be kept in {town}, the {officer} may {verb} it elsewhere, provided that the "
        "{people} are told of the place within fourteen days.",
        "Any {people_one} may ask the {body} to {verb} a {adj} {thing}; the request shall be answered within "
        "thirty days, and a refusal shall state its reasons.",
        "The {officer} shall be chosen every second year by the {people} of {town}, and may not serve more than "
        "three terms in succession.",
        "Nothing in this section shall prevent the {body} from asking the {people} to {verb} the {thing} at "
        "their own expense.",
    ]
    return c.deal("provision", templates)


def _narrative(c: _Context) -> str:
    templates = [
        "On {date}, {person} {past} the {adj} {thing} with the help of {count} {people}.",
        "After {weather}, the {people} of {town} {past} the {thing} and found it in better order than expected.",
        "{person} wrote that the {thing} had been {past} twice since {month}, once by the {officer} and once by "
        "{person2}.",
        "{connective}, the {body} agreed that the {adj} {thing} would be {past} before the end of {month}.",
        "The {people} asked {person} to explain why the {thing} was {past} so late, and the answer was "
        "{weather}.",
        "By {date} the {body} had {past} {count} pages of the {thing}, most of them by hand.",
        "{connective}, {person2} suggested that the {people} {verb} the {thing} each {month} instead of each "
        "year.",
    ]
    return c.deal("narrative", templates)


def _fill(template: str, c: _Context) -> str:
    rng = c.rng
    values = {
        "body": c.body, "town": c.town, "verb": c.pick(_VERBS), "past": c.pick(_PAST), "adj": c.pick(_ADJECTIVES),
        "thing": c.pick(_THINGS), "officer": c.pick(_OFFICERS), "people": c.pick(_PEOPLE),
        "people_one": c.pick(_PEOPLE).rstrip("s"), "date": c.date(), "month": c.pick(_MONTHS),
        "person": c.people[rng.randrange(2)], "person2": c.people[2 + rng.randrange(2)],
        "count": str(rng.randint(3, 40)), "weather": c.pick(_WEATHER), "connective": c.pick(_CONNECTIVES),
    }
    sentence = template.format(**values)
    return sentence[0].upper() + sentence[1:]


def passage(seed: int | str, index: int, target_chars: int) -> str:
    """A passage of about ``target_chars`` characters (at least that many, ending a sentence)."""
    rng = random.Random(f"{seed}:{index}")
    c = _Context(rng)
    title = f"{c.body} of {c.town}: notes of {c.date()}"
    parts = [title]
    length = len(title)
    section = 1
    while length < target_chars:
        legal = rng.random() < 0.5
        paragraph = f"Section {section}." if legal else ""
        section += legal
        done = length + 2  # the paragraph break
        # Sentence by sentence, so the passage overshoots its target by one sentence at most.
        for _ in range(rng.randint(2, 5)):
            sentence = _fill(_provision(c) if legal else _narrative(c), c)
            paragraph = f"{paragraph} {sentence}" if paragraph else sentence
            if done + len(paragraph) >= target_chars:
                break
        parts.append(paragraph)
        length = done + len(paragraph)
    return "\n\n".join(parts)
