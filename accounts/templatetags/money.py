from django import template

register = template.Library()

WEI_PER_ETH = 10**18


@register.filter
def eth(wei) -> str:
    """An amount of wei as ETH, every digit exact (integer arithmetic, no float)."""
    if wei is None or wei == "":
        return ""
    wei = int(wei)
    sign = "-" if wei < 0 else ""
    whole, frac = divmod(abs(wei), WEI_PER_ETH)
    digits = f"{frac:018d}".rstrip("0")
    return f"{sign}{whole}{'.' + digits if digits else ''} ETH"
