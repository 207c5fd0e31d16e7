"""Guided lessons: short steps that walk a class through one explorer with the live model.

Lessons are data. Each step names an explorer page and the query that sets its view (the page's own
state keys, read by static/js/<view>.js), and says one or two sentences. The teacher may replace the
lesson's example input (a text, a picture, a prompt) once for the whole lesson: a step's parameter
whose value is EXAMPLE receives it. Step URLs carry the lesson's own keys too (`lesson`, `lstep`,
and `example` when it is not the lesson's own), so a URL is still the whole view: a reload, a shared
link and a presenter room (which follows URLs) all land on the same step.

The words (titles, sentences, the example's label) are English msgids marked with N_() for the
message catalogue (app/i18n.py); Lesson.translated() gives the lesson in a request's language. The
examples are model input (the shipped models read English) and are never translated."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

from app.i18n import N_
from app.schemas import IMAGE_ID as IMAGE_ID_PATTERN

# Query keys of the lesson panel (static/js/lesson.js); common.js writeState() keeps them.
LESSON_KEY, STEP_KEY, EXAMPLE_KEY = "lesson", "lstep", "example"
EXAMPLE_MAX_CHARS = 1_000  # the longest prompt the diffusion API takes; a lesson's example is short
IMAGE_ID = re.compile(IMAGE_ID_PATTERN)  # what the ViT API takes as a picture


class _Example:
    """The placeholder for the lesson's example input in a step's params."""

    def __repr__(self) -> str:
        return "EXAMPLE"


EXAMPLE = _Example()


@dataclass(frozen=True)
class Step:
    page: str  # an explorer page's path, e.g. "/text/head"
    params: dict  # that page's state keys -> values (EXAMPLE: the lesson's example)
    title: str
    text: str  # one or two sentences for the class


@dataclass(frozen=True)
class Lesson:
    id: str
    family: str  # "text", "vision" or "diffusion"
    title: str
    summary: str
    example: str  # the default example input
    example_kind: str  # "text", "image" (a gallery id) or "prompt": which input edits it
    example_label: str
    steps: list[Step] = field(default_factory=list)

    def translated(self, gettext) -> Lesson:
        """This lesson with its words in gettext's language (its examples and URLs unchanged)."""
        steps = [replace(s, title=gettext(s.title), text=gettext(s.text)) for s in self.steps]
        return replace(self, title=gettext(self.title), summary=gettext(self.summary),
                       example_label=gettext(self.example_label), steps=steps)

    def params(self, k: int, example: str | None = None) -> dict:
        """Step k's (1-based) page params with the example put in."""
        ex = self.example if example is None else example
        return {key: ex if value is EXAMPLE else value for key, value in self.steps[k - 1].params.items()}

    def check_example(self, example: str) -> None:
        """Raise ValueError saying what is wrong with an example the teacher typed."""
        if not example.strip():
            raise ValueError(f"The lesson's {self.example_label.lower()} is empty.")
        if len(example) > EXAMPLE_MAX_CHARS:
            raise ValueError(f"The lesson's {self.example_label.lower()} has {len(example):,} characters; "
                             f"at most {EXAMPLE_MAX_CHARS:,}.")
        if self.example_kind == "image" and not IMAGE_ID.match(example):
            raise ValueError(f"{example[:80]!r} is not a picture id (a gallery id such as {self.example!r}, or an upload's).")

    def url(self, k: int, example: str | None = None) -> str:
        """Step k's URL: the page, its params, and the lesson's own keys."""
        query = {key: str(value) for key, value in self.params(k, example).items()}
        query[LESSON_KEY] = self.id
        query[STEP_KEY] = str(k)
        if example is not None and example != self.example:
            query[EXAMPLE_KEY] = example
        return f"{self.steps[k - 1].page}?{urlencode(query)}"


GPT2_TEXT = "The animal didn't cross the street because it was too tired"
GPT2_SMALL = "The animal didn't cross the street because it was too small"

GPT2 = Lesson(
    id="gpt2-attention",
    family="text",
    title=N_("How GPT-2 pays attention"),
    summary=N_("Attention as a soft lookup; queries, keys and values; scaled dot products; the causal mask; "
       "many heads; positions; the next-token probabilities and temperature; two sentences compared."),
    example=GPT2_TEXT,
    example_kind="text",
    example_label=N_("Text"),
    steps=[
        Step("/text/attention", {"text": EXAMPLE, "layer": 1, "head": 0}, N_("Attention is a soft lookup"),
             N_("Each row is one token asking: which earlier tokens matter to me? Like looking a word up in a "
                "dictionary, but instead of taking one entry it takes a mix of all of them: the row's weights "
                "are between 0 and 1 and add up to 1 (the bars below).")),
        Step("/text/head", {"text": EXAMPLE, "layer": 1, "head": 0, "step": 3}, N_("The query"),
             N_("To do the lookup, each token's vector is multiplied by a learned matrix Wq. The result, Q, is "
                "the token's query: what it is looking for.")),
        Step("/text/head", {"text": EXAMPLE, "layer": 1, "head": 0, "step": 4}, N_("The key"),
             N_("A second matrix, Wk, gives every token a key: what it offers to the queries of others. The "
                "same matrix is used for every token.")),
        Step("/text/head", {"text": EXAMPLE, "layer": 1, "head": 0, "step": 5}, N_("The value"),
             N_("A third matrix, Wv, gives every token a value: what it passes on when another token attends "
                "to it. Query, key and value are three views of the same token.")),
        Step("/text/head", {"text": EXAMPLE, "layer": 1, "head": 0, "step": 6}, N_("Scores: query · key"),
             N_("Every query is compared with every key by a dot product. A large score means the key "
                "matches what the query is looking for.")),
        Step("/text/head", {"text": EXAMPLE, "layer": 1, "head": 0, "step": 7}, N_("Scaled dot product"),
             N_("The scores are divided by the square root of the vector length. Without it, long vectors give "
                "huge scores and the softmax would pick a single token almost every time.")),
        Step("/text/head", {"text": EXAMPLE, "layer": 1, "head": 0, "step": 8}, N_("The causal mask"),
             N_("GPT-2 writes left to right, so a token may not look at the words after it: every score above "
                "the diagonal is blocked (set to minus infinity) before the softmax.")),
        Step("/text/head", {"text": EXAMPLE, "layer": 1, "head": 0, "step": 9}, N_("Softmax"),
             N_("Softmax turns each row of scores into weights that are positive and add up to 1, the blocked "
                "ones 0. This is the attention pattern of the first step.")),
        Step("/text/head", {"text": EXAMPLE, "layer": 1, "head": 0, "step": 10}, N_("The answer of the lookup"),
             N_("Each token's output is the weighted average of the values, using its attention weights: the "
                "soft lookup's answer.")),
        Step("/text/head", {"text": EXAMPLE, "layer": 1, "head": 0, "step": 11}, N_("Many heads"),
             N_("A layer has several heads, each with its own small Wq, Wk and Wv, all working at the same "
                "time. Their answers are put side by side and mixed by one more matrix, Wo.")),
        Step("/text/heads", {"text": EXAMPLE}, N_("Every head of every layer"),
             N_("Here is every head of the model on the same text. Each has learned its own way of looking: "
                "some at the word just before, some at the first word, some spread out.")),
        Step("/text/head", {"text": EXAMPLE, "layer": 0, "head": 0, "step": 1}, N_("Positions"),
             N_("Attention by itself does not know word order. So before the first layer GPT-2 adds a learned "
                "position vector to each token's vector: X here holds the word and its place together.")),
        Step("/text/attention", {"text": EXAMPLE, "layer": 0, "head": 0}, N_("A head that uses position"),
             N_("This head often looks at the token just before: the bright cells just left of the diagonal. "
                "It can only do that because positions were added to the tokens.")),
        Step("/text/next", {"text": EXAMPLE, "temperature": 1}, N_("The next token"),
             N_("After the last layer, the model gives every word in its vocabulary a probability of coming "
                "next. These are the ten most likely; add one to the text to write with the model.")),
        Step("/text/next", {"text": EXAMPLE, "temperature": 0.3}, N_("Low temperature"),
             N_("Dividing the scores by a temperature below 1 makes the likely words even more likely: the "
                "model becomes predictable, and picks nearly the same word every time.")),
        Step("/text/next", {"text": EXAMPLE, "temperature": 2}, N_("High temperature"),
             N_("A temperature above 1 flattens the probabilities: unlikely words get a real chance, so the "
                "writing becomes more surprising, and more often wrong.")),
        Step("/text/compare", {"a": GPT2_TEXT, "b": GPT2_SMALL, "layer": 0, "head": 3, "qa": 8, "qb": 8},
             N_("Two sentences: follow “it”"),
             N_("The two sentences differ only in their last word. “it” comes before that word and cannot "
                "see it (the causal mask), so its attention is the same in both.")),
        Step("/text/compare", {"a": GPT2_TEXT, "b": GPT2_SMALL, "layer": 0, "head": 3, "qa": 11, "qb": 11},
             N_("Two sentences: follow the last word"),
             N_("The last word itself reads the two sentences differently: compare where “tired” and “small” "
                "look. Context changes attention, and so what the model makes of a word.")),
    ],
)

VIT = Lesson(
    id="vit-image",
    family="vision",
    title=N_("How a Vision Transformer sees a picture"),
    summary=N_("Patches as tokens, the CLS token, position embeddings, attention over the image, attention "
       "rollout, and the class probabilities."),
    example="scene-1",
    example_kind="image",
    example_label=N_("Picture"),
    steps=[
        Step("/vision/patches", {"image": EXAMPLE, "patch": 27}, N_("Patches"),
             N_("A Vision Transformer cuts the picture into a grid of small square patches. Each patch becomes "
                "one token, like a word in a sentence.")),
        Step("/vision/patches", {"image": EXAMPLE, "patch": 36}, N_("From pixels to a vector"),
             N_("A patch's pixels are flattened into one long list of numbers, and a learned matrix turns that "
                "list into the patch's embedding: a vector the Transformer can work with.")),
        Step("/vision/heads", {"image": EXAMPLE}, N_("Position embeddings"),
             N_("The embedding says what a patch shows, not where it is, so a learned position vector is added "
                "to it. Each small map compares one patch's position vector with all the others: nearby patches "
                "came out alike, so the model learned the grid by itself.")),
        Step("/vision/attention", {"image": EXAMPLE, "layer": 0, "head": -1, "from": 0}, N_("The CLS token"),
             N_("Besides the patches there is one extra token, CLS, with no pixels of its own. It collects "
                "information from the patches through attention, and only CLS is used to name the picture.")),
        Step("/vision/attention", {"image": EXAMPLE, "layer": 0, "head": -1, "from": 29}, N_("Attention over the image"),
             N_("Every token may look at every other token, in all directions: there is no causal mask in a "
                "ViT. Here one patch (outlined) is the one looking; click any other patch to follow it.")),
        Step("/vision/attention", {"image": EXAMPLE, "layer": 3, "head": -1, "from": 0}, N_("Where CLS looks at the end"),
             N_("In the last layer, CLS looks mostly at the patches where the shape is: what it gathers there "
                "decides the answer.")),
        Step("/vision/rollout", {"image": EXAMPLE, "step": 0, "from": 0}, N_("Attention rollout: layer 0"),
             N_("One layer's attention is not the whole story, because each layer mixes what the layers before "
                "it mixed. Attention rollout multiplies the layers' attention together: this is after layer 0.")),
        Step("/vision/rollout", {"image": EXAMPLE, "step": 3, "from": 0}, N_("Attention rollout: the last layer"),
             N_("After all the layers, rollout shows which patches of the input finally reach CLS. Move the slider "
                "to watch it build up layer by layer.")),
        Step("/vision/prediction", {"image": EXAMPLE}, N_("Class probabilities"),
             N_("Finally one linear layer turns CLS's vector into a score per class, and softmax turns the "
                "scores into probabilities that add up to 1.")),
    ],
)

DIFFUSION = Lesson(
    id="diffusion",
    family="diffusion",
    title=N_("How Stable Diffusion draws from noise"),
    summary=N_("The autoencoder's latent space, forward diffusion (adding noise), reverse diffusion (removing "
       "it step by step), cross-attention to the words, and classifier-free guidance."),
    example="a large red star at the top left",
    example_kind="prompt",
    example_label=N_("Prompt"),
    steps=[
        Step("/diffusion/forward", {"scene": 0, "t": 0, "seed": 0}, N_("The latent space"),
             N_("Stable Diffusion does not work on pixels. Its autoencoder squeezes the picture into a much "
                "smaller latent (the small maps under “The latent space”) and decodes it back almost unchanged.")),
        Step("/diffusion/forward", {"scene": 0, "t": 300, "seed": 0}, N_("Forward diffusion"),
             N_("To train the model, random noise is added to the latent. The timestep t says how much: at "
                "t = 300 the picture is still there, under the noise.")),
        Step("/diffusion/forward", {"scene": 0, "t": 999, "seed": 0}, N_("Pure noise"),
             N_("At the last timestep almost nothing of the picture is left. The model learns to undo this, "
                "predicting the noise that was added, one step at a time.")),
        Step("/diffusion/generate", {"prompt": EXAMPLE, "seed": 0, "steps": 20, "guidance": 5, "step": 0},
             N_("Reverse diffusion: the first step"),
             N_("Drawing starts from pure random noise (the seed chooses it); the model predicts the noise in it "
                "and the scheduler removes part of it. x̂₀ is the model's first guess of the clean picture.")),
        Step("/diffusion/generate", {"prompt": EXAMPLE, "seed": 0, "steps": 20, "guidance": 5, "step": 5},
             N_("Reverse diffusion: step by step"),
             N_("Each step removes a little more noise. Use the slider or the arrow keys to go back and forth "
                "through the steps and watch the picture appear.")),
        Step("/diffusion/generate", {"prompt": EXAMPLE, "seed": 0, "steps": 20, "guidance": 5, "step": -1},
             N_("The last step"),
             N_("After the last step the latent is clean, and the autoencoder decodes it into the final picture.")),
        Step("/diffusion/generate", {"prompt": EXAMPLE, "seed": 0, "steps": 20, "guidance": 5, "step": -1, "word": 3},
             N_("Cross-attention: where each word lands"),
             N_("The picture reads the prompt through cross-attention: every spot of the latent looks at the "
                "words. The highlighted word's map shows where it is used; hover the other words.")),
        Step("/diffusion/generate", {"prompt": EXAMPLE, "seed": 0, "steps": 20, "guidance": 5, "step": -1,
                                     "cmp": "guidance", "b": 1},
             N_("Classifier-free guidance"),
             N_("At every step the model predicts the noise twice, with the prompt and without it, and pushes "
                "further in the prompt's direction by the guidance scale. A uses 5; B uses 1, no extra push.")),
        Step("/diffusion/generate", {"prompt": EXAMPLE, "seed": 0, "steps": 20, "guidance": 5, "step": -1,
                                     "cmp": "guidance", "b": 15},
             N_("Too much guidance"),
             N_("A large guidance scale follows the prompt harder but can overshoot: colours too strong, odd "
                "edges. Compare 5 with 15, then try your own values below.")),
    ],
)

LESSONS: dict[str, Lesson] = {lesson.id: lesson for lesson in (GPT2, VIT, DIFFUSION)}
