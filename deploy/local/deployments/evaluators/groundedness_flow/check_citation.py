import re

from promptflow.core import tool

CITATION = re.compile(r"\[\d+\]")


@tool
def check_citation(answer: str) -> str:
    """The demo flow numbers its facts; an answer that leans on them cites one like "[2]"."""
    return "cited" if CITATION.search(answer) else "uncited"
