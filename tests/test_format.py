"""Llasa's token layout, prompts and parsing, checked against a tokenizer laid out like Llasa's."""

import pytest

import llasa
from llasa.format import (
    CODEBOOK_SIZE,
    SpeechVocab,
    codes_to_tokens,
    completion_text,
    parse_completion_text,
    parse_completions,
)

# Made-up ids for tests that do not need a real tokenizer: <|s_0|> is 1000.
VOCAB = SpeechVocab(first_speech_id=1000, speech_start_id=900, speech_end_id=901, eot_id=902)
SYSTEM_BLOCK = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
)


class TestSpeechTokens:
    def test_token_strings(self):
        # codes map one-to-one onto <|s_N|> strings and back
        assert llasa.speech_token(0) == "<|s_0|>"
        assert llasa.codes_to_tokens([5, 65535, 0]) == "<|s_5|><|s_65535|><|s_0|>"
        assert llasa.tokens_to_codes("<|s_5|><|s_65535|><|s_0|>") == [5, 65535, 0]

    def test_codes_from_a_dataset_cell(self):
        # a cell holds codes as a list (of ints or numpy ints) or as speech tokens; an empty cell holds none
        assert llasa.codes_from([3, 4]) == llasa.codes_from("<|s_3|><|s_4|>") == [3, 4]
        assert llasa.codes_from(None) == llasa.codes_from("") == []

    def test_out_of_codebook_code_is_rejected(self):
        # 65536 does not exist in XCodec2's 4^8 codebook
        with pytest.raises(ValueError, match="outside XCodec2's codebook"):
            llasa.speech_token(CODEBOOK_SIZE)

    def test_parsing_text_ignores_other_tokens_and_out_of_range_codes(self):
        # markers, text and an impossible code are skipped; real codes keep their order
        text = "<|SPEECH_GENERATION_START|><|s_1|>hello<|s_70000|><|s_2|><|SPEECH_GENERATION_END|>"
        assert llasa.tokens_to_codes(text) == [1, 2]


class TestSpeechVocab:
    def test_ids_follow_llasa_layout(self, tiny_tokenizer):
        # the eight markers come right before <|s_0|>, END is the sixth of them
        vocab = SpeechVocab.from_tokenizer(tiny_tokenizer)
        assert vocab.speech_end_id == vocab.first_speech_id - 3
        assert vocab.speech_start_id == vocab.first_speech_id - 4
        assert tiny_tokenizer.convert_ids_to_tokens(vocab.first_speech_id + 65535) == "<|s_65535|>"
        assert len(tiny_tokenizer) == vocab.first_speech_id + CODEBOOK_SIZE

    def test_codes_ids_round_trip(self, tiny_tokenizer):
        # codes -> ids -> tokens -> codes is the identity
        vocab = SpeechVocab.from_tokenizer(tiny_tokenizer)
        codes = [0, 1, 4095, 65535]
        ids = vocab.codes_to_ids(codes)
        assert ids == [vocab.first_speech_id + code for code in codes]
        text = tiny_tokenizer.decode(ids)
        assert llasa.tokens_to_codes(text) == codes
        assert tiny_tokenizer(text, add_special_tokens=False).input_ids == ids

    def test_base_llama_tokenizer_is_refused(self, tiny_tokenizer):
        # a tokenizer without Llasa's added tokens gets an error that names the fix
        class BaseTokenizer:
            def get_vocab(self):
                return {"<|eot_id|>": 5, "hello": 6}

        with pytest.raises(ValueError, match="lacks Llasa's tokens.*Llasa model"):
            SpeechVocab.from_tokenizer(BaseTokenizer())

    def test_non_contiguous_speech_ids_are_refused(self, tiny_tokenizer):
        # a vocabulary whose <|s_N|> ids are shuffled is not Llasa's layout
        vocab = dict(tiny_tokenizer.get_vocab())
        vocab["<|s_65535|>"] = 3

        class Shuffled:
            def get_vocab(self):
                return vocab

        with pytest.raises(ValueError, match="not contiguous"):
            SpeechVocab.from_tokenizer(Shuffled())

    def test_parse_stops_at_end_and_counts_dropped(self, tiny_tokenizer):
        # text tokens inside the speech are dropped and counted; nothing after END is read
        vocab = SpeechVocab.from_tokenizer(tiny_tokenizer)
        ids = vocab.codes_to_ids([7, 8]) + [42] + vocab.codes_to_ids([9]) + [vocab.speech_end_id]
        ids += vocab.codes_to_ids([10])
        parsed = vocab.parse(ids)
        assert parsed.codes == [7, 8, 9]
        assert parsed.ended is True
        assert parsed.n_dropped == 1

    def test_parse_reports_missing_end(self, tiny_tokenizer):
        # a truncated generation keeps its codes but says END never came
        vocab = SpeechVocab.from_tokenizer(tiny_tokenizer)
        parsed = vocab.parse(vocab.codes_to_ids([1, 2, 3]))
        assert (parsed.codes, parsed.ended, parsed.n_dropped) == ([1, 2, 3], False, 0)

    def test_parse_stops_at_end_of_turn_without_calling_it_ended(self, tiny_tokenizer):
        # <|eot_id|> closes the turn, but only <|SPEECH_GENERATION_END|> is Llasa's proper stop
        vocab = SpeechVocab.from_tokenizer(tiny_tokenizer)
        parsed = vocab.parse(vocab.codes_to_ids([4]) + [vocab.eot_id] + vocab.codes_to_ids([5]))
        assert (parsed.codes, parsed.ended) == ([4], False)


class TestPrompts:
    def test_plain_tts_prompt_exact(self, tiny_tokenizer):
        # the exact string Llasa was trained on, with the date pinned and no end-of-turn after the assistant prefix
        prompt = llasa.render_prompt(tiny_tokenizer, "Hello world.")
        assert prompt == (
            SYSTEM_BLOCK + "<|start_header_id|>user<|end_header_id|>\n\n"
            "Convert the text to speech:<|TEXT_UNDERSTANDING_START|>Hello world.<|TEXT_UNDERSTANDING_END|>"
            "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n<|SPEECH_GENERATION_START|>"
        )

    def test_voice_cloning_prompt_exact(self, tiny_tokenizer):
        # prompt transcript + target text as one text; the prompt's speech tokens open the assistant turn
        prompt = llasa.render_prompt(tiny_tokenizer, "Target words.", prompt_text="Prompt words.", prompt_codes=[3, 4])
        assert prompt == (
            SYSTEM_BLOCK + "<|start_header_id|>user<|end_header_id|>\n\n"
            "Convert the text to speech:<|TEXT_UNDERSTANDING_START|>Prompt words. Target words."
            "<|TEXT_UNDERSTANDING_END|><|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
            "<|SPEECH_GENERATION_START|><|s_3|><|s_4|>"
        )

    def test_prompt_tokenizes_to_one_bos_and_ends_on_speech_start(self, tiny_tokenizer):
        # the rendered prompt already holds <|begin_of_text|>: tokenize it without adding another
        vocab = SpeechVocab.from_tokenizer(tiny_tokenizer)
        ids = tiny_tokenizer(llasa.render_prompt(tiny_tokenizer, "Hi."), add_special_tokens=False).input_ids
        assert ids.count(tiny_tokenizer.bos_token_id) == 1 and ids[0] == tiny_tokenizer.bos_token_id
        assert ids[-1] == vocab.speech_start_id

    def test_prompt_does_not_depend_on_today(self, tiny_tokenizer):
        # the template would write today's date; the pinned one keeps prompts identical across days
        assert "Today Date: 26 Jul 2024" in llasa.render_prompt(tiny_tokenizer, "Hi.")

    def test_completion_text(self):
        # the continuation Llasa was trained to write: speech tokens then END
        assert llasa.completion_text([1, 2]) == "<|s_1|><|s_2|><|SPEECH_GENERATION_END|>"

    def test_training_pair_renders_llasas_training_sequence(self, tiny_tokenizer):
        # user turn as prompt, the whole assistant turn as completion: rendered together they are the inference
        # prompt followed by the speech, END and the end of turn
        prompt, completion = llasa.training_pair("Hello world.", [1, 2])
        rendered = tiny_tokenizer.apply_chat_template(
            prompt + completion, tokenize=False, **llasa.chat_template_kwargs()
        )
        assert rendered == llasa.render_prompt(tiny_tokenizer, "Hello world.") + (
            "<|s_1|><|s_2|><|SPEECH_GENERATION_END|><|eot_id|>"
        )

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"text": "  "}, "text to synthesise is empty"),
            ({"text": "Hi.", "prompt_text": "Hello."}, "needs both"),
            ({"text": "Hi.", "prompt_codes": [1]}, "needs both"),
            ({"text": "Hi.", "prompt_text": "Hello.", "prompt_codes": []}, "no speech codes"),
        ],
    )
    def test_bad_prompt_inputs(self, kwargs, message):
        # each malformed request names what is wrong
        with pytest.raises(ValueError, match=message):
            llasa.build_messages(**kwargs)


class TestCompletionParsing:
    def test_text_completion_codes_end_and_dropped(self):
        # codes up to the end marker; one stray word and one out-of-range token dropped; nothing after the end
        text = "<|s_1|>junk<|s_2|><|s_70000|>" + completion_text([3]) + "<|s_4|>"
        parsed = parse_completion_text(text)
        assert parsed.codes == [1, 2, 3]
        assert parsed.ended and parsed.n_dropped == 2

    def test_text_completion_without_end(self):
        # a completion cut by max_completion_length has no end marker
        parsed = parse_completion_text(codes_to_tokens([5, 6]))
        assert parsed.codes == [5, 6] and not parsed.ended and parsed.n_dropped == 0

    def test_conversational_completion_content(self):
        # TRL's conversational completions are [{"role": "assistant", "content": ...}]
        message = [{"role": "assistant", "content": completion_text([7, 8])}]
        assert parse_completions([message], None, None)[0].codes == [7, 8]

    def test_ids_are_preferred_when_the_vocabulary_is_known(self):
        # the ids say [1, 2], the (decoded) text would say [9]: ids win; without the vocabulary, the text is read
        parsed = parse_completions([completion_text([9])], [VOCAB.codes_to_ids([1, 2]) + [VOCAB.speech_end_id]], VOCAB)
        assert parsed[0].codes == [1, 2]
        assert parse_completions([completion_text([9])], [VOCAB.codes_to_ids([1, 2]) + [VOCAB.speech_end_id]], None)[
            0
        ].codes == [9]


def test_speech_summarized_for_logs():
    # Each run of speech tokens, in text or in chat messages, becomes its code count; markers and words stay.
    from llasa.format import summarize_speech

    completion = [{"role": "assistant", "content": codes_to_tokens([1, 2, 3]) + "<|SPEECH_GENERATION_END|>"}]
    assert summarize_speech(completion) == [
        {"role": "assistant", "content": "<3 speech codes><|SPEECH_GENERATION_END|>"}
    ]
    voice = "<|SPEECH_GENERATION_START|>" + codes_to_tokens(list(range(120)))
    assert (
        summarize_speech(voice + " a " + codes_to_tokens([7]))
        == "<|SPEECH_GENERATION_START|><120 speech codes> a <1 speech codes>"
    )
    assert summarize_speech("no speech") == "no speech" and summarize_speech(None) is None
