"""The documents the embeddings example indexes: eight topics of eight sentences each."""

from __future__ import annotations

TOPICS: dict[str, list[str]] = {
    "astronomy": [
        "Planets orbit the sun along elliptical paths.",
        "The telescope revealed a faint spiral galaxy.",
        "A total solar eclipse darkened the sky at noon.",
        "Jupiter has dozens of moons and a great red storm.",
        "Astronauts docked with the space station after launch.",
        "A comet's tail always points away from the sun.",
        "The light of distant stars left them long ago.",
        "Mars is a cold desert planet with red dust.",
    ],
    "cooking": [
        "Knead the dough and let it rise for an hour.",
        "Simmer the tomato sauce with garlic and basil.",
        "Whisk the eggs with sugar until pale and fluffy.",
        "Roast the vegetables in a hot oven with olive oil.",
        "Season the soup with salt, pepper and fresh herbs.",
        "Bake the bread until the crust is golden brown.",
        "Fry the onions slowly until they caramelize.",
        "Chop the parsley finely and sprinkle it on the pasta.",
    ],
    "football": [
        "The striker scored a goal in the final minute.",
        "The goalkeeper saved a penalty kick.",
        "The referee showed a red card for a dangerous tackle.",
        "Fans sang in the stadium as the team won the league.",
        "The coach changed tactics at half time.",
        "A corner kick was headed into the net.",
        "The match ended in a draw after extra time.",
        "The midfielder passed the ball to the winger.",
    ],
    "gardening": [
        "Water the tomato seedlings every morning.",
        "Prune the roses in late winter.",
        "Spread compost around the vegetable beds.",
        "Plant tulip bulbs in autumn for spring flowers.",
        "Pull the weeds before they set seed.",
        "Mulch keeps the soil moist during dry summers.",
        "The apple tree blossomed after a mild spring.",
        "Sow lettuce seeds in shallow rows.",
    ],
    "music": [
        "The orchestra tuned their violins before the concert.",
        "She practised piano scales every evening.",
        "The band played a loud guitar solo on stage.",
        "The choir sang a hymn in four-part harmony.",
        "A drummer keeps the rhythm steady for the band.",
        "The composer wrote a symphony in three movements.",
        "The jazz trumpet improvised over the chords.",
        "He sang the melody while strumming the guitar.",
    ],
    "finance": [
        "The central bank raised interest rates again.",
        "Shares fell sharply after the earnings report.",
        "Diversify your investments to lower the risk.",
        "Inflation erodes the value of savings over time.",
        "The company paid a dividend to its shareholders.",
        "Bond prices fall when interest rates rise.",
        "A budget tracks income and monthly expenses.",
        "The stock market rallied on strong jobs data.",
    ],
    "medicine": [
        "The doctor prescribed antibiotics for the infection.",
        "Vaccines train the immune system to fight disease.",
        "The nurse measured the patient's blood pressure.",
        "Regular exercise lowers the risk of heart disease.",
        "The surgeon repaired the torn knee ligament.",
        "Drink fluids and rest when you have a fever.",
        "The hospital opened a new cancer treatment ward.",
        "An x-ray showed the broken bone in his wrist.",
    ],
    "computing": [
        "The program crashed with a null pointer error.",
        "Compile the code and run the unit tests.",
        "The database query used an index to run faster.",
        "A compiler translates source code into machine code.",
        "The server handles thousands of requests per second.",
        "Encrypt passwords before storing them in the database.",
        "The laptop's processor has eight cores.",
        "Git tracks every change to the source code.",
    ],
}
"""Topic -> its sentences."""

QUERY = ("Which planet has the most moons orbiting it?", "astronomy")
"""The nearest-neighbour check: a question, and the topic its nearest document must have."""


def documents() -> list[tuple[str, str]]:
    """Every document as (topic, text)."""
    return [(topic, text) for topic, texts in TOPICS.items() for text in texts]
