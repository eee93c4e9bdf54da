"""The demo's questions, each with the context a retrieval step would have found for it.

A small customer-support knowledge base of a made-up outdoor shop, plus a few questions about
PromptPulse itself. Each context holds the facts that answer its question and one or two that do
not, as retrieved passages usually do, so a grounded answer has to pick the right ones. None of
the texts uses llmsim's off-topic drift vocabulary (services/llmsim/answers.py), so whatever of
it appears in an answer came from drift.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    question: str
    context: str


def _context(*facts: str) -> str:
    return "\n".join(facts)


QUESTIONS: tuple[Question, ...] = (
    Question(
        "How long does standard shipping take within Germany?",
        _context(
            "Standard shipping within Germany takes two to four business days.",
            "Express shipping arrives the next business day when ordered before 2 pm.",
            "Gift cards are delivered by email within minutes.",
        ),
    ),
    Question(
        "How many days do customers have to return an item?",
        _context(
            "Customers may return an item within 30 days of delivery for a full refund.",
            "Returned items must be unused and in their original packaging.",
            "The flagship store opens at 9 am on weekdays.",
        ),
    ),
    Question(
        "When is a refund paid after a return arrives?",
        _context(
            "A refund is paid within five business days after the return arrives at the warehouse.",
            "Refunds go back to the original payment method.",
            "Store credit never expires.",
        ),
    ),
    Question(
        "Which payment methods does the online shop accept?",
        _context(
            "The online shop accepts credit cards, PayPal and bank transfer.",
            "Invoices are available for business customers after a credit check.",
            "Prices include VAT for deliveries within the EU.",
        ),
    ),
    Question(
        "How long is the warranty on tents?",
        _context(
            "Every tent carries a three-year warranty against manufacturing defects.",
            "The warranty does not cover damage from misuse or normal wear.",
            "Sleeping bags carry a two-year warranty.",
        ),
    ),
    Question(
        "Can customers change the delivery address after ordering?",
        _context(
            "Customers can change the delivery address until the order is packed.",
            "Orders are usually packed within four hours of payment.",
            "The support team answers chat messages from 8 am to 8 pm.",
        ),
    ),
    Question(
        "Does the shop ship orders to Switzerland?",
        _context(
            "The shop ships orders to Switzerland, Norway and every EU country.",
            "Orders to Switzerland may incur import duties paid by the recipient.",
            "Shipping is free for orders above 80 euros.",
        ),
    ),
    Question(
        "How are hiking boots cleaned and cared for?",
        _context(
            "Hiking boots should be cleaned with a soft brush and lukewarm water.",
            "Leather boots need wax twice a season to stay waterproof.",
            "Boots should dry slowly at room temperature, never near a heater.",
        ),
    ),
    Question(
        "What does the loyalty program give members?",
        _context(
            "Loyalty program members collect one point for every euro spent.",
            "Members redeem 500 points for a 10 euro voucher.",
            "Members receive early access to seasonal sales.",
        ),
    ),
    Question(
        "Is gift wrapping available for online orders?",
        _context(
            "Gift wrapping is available for online orders at 3 euros per item.",
            "A gift message can be added at checkout.",
            "Bulky items such as tents cannot be wrapped.",
        ),
    ),
    Question(
        "What size of sleeping bag suits a tall person?",
        _context(
            "Sleeping bags come in regular size for people up to 180 cm and long size up to 200 cm.",
            "A tall person should choose the long size for warmth at the feet.",
            "Sleeping pads are sold separately.",
        ),
    ),
    Question(
        "How can customers track their parcel?",
        _context(
            "Customers can track their parcel with the tracking link in the shipping email.",
            "Tracking updates appear within 12 hours of dispatch.",
            "Parcels are handed to DHL or UPS depending on the destination.",
        ),
    ),
    Question(
        "Can customers rent climbing equipment?",
        _context(
            "Customers can rent climbing equipment such as harnesses, helmets and ropes in the flagship store.",
            "Rental costs 15 euros per day and requires a deposit.",
            "Climbing courses run every Saturday.",
        ),
    ),
    Question(
        "What happens when an ordered product is out of stock?",
        _context(
            "When an ordered product is out of stock, customers receive an email with the expected restock date.",
            "Customers may cancel an out of stock product free of charge.",
            "New collections arrive every spring and autumn.",
        ),
    ),
    Question(
        "How are waterproof jackets washed?",
        _context(
            "Waterproof jackets are washed at 30 degrees with a technical detergent.",
            "Fabric softener damages the waterproof membrane.",
            "A warm tumble dry restores the water repellent coating of jackets.",
        ),
    ),
    Question(
        "Does the store repair damaged backpacks?",
        _context(
            "The store repairs damaged backpacks, tents and jackets in its own workshop.",
            "Repairs take about two weeks and are quoted before work starts.",
            "Backpacks come in volumes from 20 to 70 litres.",
        ),
    ),
    Question(
        "How does PromptPulse choose which requests to judge?",
        _context(
            "PromptPulse judges a deterministic sample of production requests.",
            "The sampling decision compares a hash of the request id with the sampling rate.",
            "The default sampling rate is 10 percent.",
        ),
    ),
    Question(
        "When does a PromptPulse monitor raise an alert?",
        _context(
            "A monitor raises an alert when a window's score falls below its threshold.",
            "A window counts only when it holds enough judged samples.",
            "Alerts are published to Kafka and optionally to a webhook.",
        ),
    ),
    Question(
        "Which quality metrics does PromptPulse measure?",
        _context(
            "PromptPulse measures groundedness, relevance, coherence and fluency of answers.",
            "Each quality metric is scored from 1 to 5 by an LLM judge.",
            "Token usage and latency are counted for every request.",
        ),
    ),
    Question(
        "Where does PromptPulse store metrics and traces?",
        _context(
            "PromptPulse stores metrics, traces and alerts in PostgreSQL.",
            "Per-minute rollups keep quality, token and latency figures.",
            "Raw events are kept for a configurable retention period.",
        ),
    ),
)

# End users rate answers now and then; comments the generator picks from (rating, comment).
FEEDBACK: tuple[tuple[int, str], ...] = (
    (1, "Helpful, thanks."),
    (1, "That answered it."),
    (-1, "Not what I asked."),
    (1, ""),
    (-1, "Too vague."),
)
