"""The project's word-level tokenizer and chat template, for the tiny models.

No hub is reachable here, so the tiny models ship a tokenizer the project builds itself:
lower-cased words and punctuation, a few special tokens, and a Qwen-style chat template
with a ``<video>`` placeholder (the same layout LLaVA-OneVision uses). It is saved with
the model (``save_pretrained`` layout) and loaded back with ``AutoTokenizer``.

    python -c "from hermes.tokenizer import build_tokenizer; print(build_tokenizer().vocab_size)"
"""

from __future__ import annotations

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

PAD, UNK, IM_START, IM_END, VIDEO_TOKEN = "<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<video>"
SPECIAL_TOKENS = [PAD, UNK, IM_START, IM_END, VIDEO_TOKEN]

# Words of the tiny models' world: chat roles, question language, shapes, colours,
# positions, numbers. Extending the list changes ids, so a trained model keeps its own
# copy in its directory.
WORDS = tuple(
    "system user assistant you are a helpful video assistant watch the stream and answer "
    "what which who how many much is are was were did does do there on in of to at "
    "screen now current scene first last before after when while whole video happened "
    "appear appeared appears leave left leaves change changed changes colour color shape "
    "size big small large count counted so far seen see visible until then than time "
    "summarize describe details detail related find recent context summary question "
    "moment moments event events order come came earlier later same different "
    "circle square triangle star diamond cross ring heart hexagon object shape frame "
    "circles squares triangles stars diamonds crosses rings hearts hexagons objects shapes frames "
    "red green blue yellow orange purple pink white black gray cyan brown "
    "top bottom middle center right up down moving moved still background "
    "yes no none nothing zero one two three four five six seven eight nine ten have has had times "
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 "
    "it its this that these those all any some every with for from by as or not "
    "? . , ; : ' !".split()
)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer(words: list[str] | tuple[str, ...] = WORDS) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over SPECIAL_TOKENS + words, with the chat template set."""
    vocab: dict[str, int] = {}
    for token in [*SPECIAL_TOKENS, *words]:
        vocab.setdefault(token, len(vocab))
    core = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.add_special_tokens(SPECIAL_TOKENS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, unk_token=UNK, eos_token=IM_END
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
