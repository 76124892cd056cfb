from django import forms
from django.conf import settings

from accounts import money
from marketplace.services import price_ceiling_parse
from writer.conversation import MAX_INSTRUCTION_CHARS, PRESETS, PRESETS_BY_TYPE
from writer.models import LENGTH_CHOICES, STYLE_CHOICES, TYPE_CHOICES
from writer.services import MAX_PROMPT_CHARS


def _model_choices():
    # Only the models the product offers: an id made up by a caller never reaches
    # discovery (the chain and every host), from the anonymous estimate least of all.
    return [("", "The profile's")] + [(m, m) for m in settings.MARKETPLACE_MODELS]


class GenerateForm(forms.Form):
    content_type = forms.ChoiceField(choices=TYPE_CHOICES, initial="blog", label="Type")
    prompt = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6, "placeholder": "What should it be about?"}),
        max_length=MAX_PROMPT_CHARS, strip=True,
        error_messages={"required": "Write a prompt first.",
                        "max_length": f"Keep the prompt under {MAX_PROMPT_CHARS} characters "
                                      "(it has %(show_value)d)."})
    style = forms.ChoiceField(choices=STYLE_CHOICES, initial="professional")
    length = forms.ChoiceField(choices=LENGTH_CHOICES, initial="medium")
    model = forms.TypedChoiceField(required=False, empty_value="", choices=_model_choices,
                                   help_text="Advanced: a model other than the profile's")
    max_tokens = forms.IntegerField(required=False, min_value=16, max_value=2048,
                                    help_text="Advanced: the token budget")
    temperature = forms.FloatField(required=False, min_value=0.0, max_value=2.0,
                                   help_text="Advanced: 0 is focused, 2 is wild")
    # Wei can pass 2^53, so it is text: an amount with its unit ("2 gwei") or wei, read by
    # accounts.money and bounded by the marketplace's own parser.
    max_price_per_token = forms.CharField(
        required=False, max_length=40, strip=True, label="Max price per token",
        widget=forms.TextInput(attrs={"placeholder": "any, e.g. 2 gwei"}),
        help_text="Advanced: hosts asking more are not used; in gwei (\"2 gwei\") or wei")

    def clean_max_price_per_token(self) -> int | None:
        given = self.cleaned_data.get("max_price_per_token") or None  # empty: no limit
        try:
            return price_ceiling_parse(None if given is None else money.parse(given))
        except ValueError:  # money.AmountError is one
            raise forms.ValidationError("A price per token such as \"2 gwei\" or a whole "
                                        "number of wei, at least 1 wei (or leave it empty for "
                                        "no limit).", code="invalid_price") from None


class EditForm(forms.Form):
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 16}), strip=False)


class FollowupForm(forms.Form):
    """A change asked of a finished version: one of its type's buttons (`preset`, which
    wins when both are sent) or the person's own words (`instruction`). `change` in the
    cleaned data is the instruction sent."""

    preset = forms.CharField(required=False, max_length=20)
    instruction = forms.CharField(
        required=False, max_length=MAX_INSTRUCTION_CHARS, strip=True,
        widget=forms.Textarea(attrs={"rows": 2, "maxlength": MAX_INSTRUCTION_CHARS,
                                     "placeholder": "e.g. Mention that the office is closed "
                                                    "on Friday"}),
        error_messages={"max_length": f"Keep the change under {MAX_INSTRUCTION_CHARS} "
                                      "characters (it has %(show_value)d)."})

    def __init__(self, *args, content_type: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.content_type = content_type

    def clean(self):
        data = super().clean()
        preset = data.get("preset")
        if preset:
            if preset not in PRESETS_BY_TYPE.get(self.content_type, ()):
                raise forms.ValidationError("That change is not offered for this piece.",
                                            code="unknown_preset")
            data["change"] = PRESETS[preset][1]
        elif data.get("instruction"):
            data["change"] = data["instruction"]
        elif "instruction" not in self.errors:
            self.add_error("instruction", forms.ValidationError(
                "Write the change you want, or pick one of the buttons.", code="required"))
        return data
