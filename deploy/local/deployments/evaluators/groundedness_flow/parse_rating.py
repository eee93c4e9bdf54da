import re

from promptflow.core import tool

NUMBER = re.compile(r"[-+]?(?:\d+\.\d+|\d+)")


@tool
def parse_rating(rating: str) -> float:
    """The first number of the judge's reply: "7", "Score: 7" and '{"score": 7}' all give 7."""
    found = NUMBER.search(rating or "")
    if found is None:
        raise ValueError("the judge's reply holds no rating")
    return float(found.group())
