"""The text of the authorisation SMS: who asks, from which institution, why, and the code.

Naming the requester and the purpose next to the code is PSD2's "dynamic linking" idea (RTS
Art. 5): the patient sees what the code approves, and a code read out to the wrong person is
recognisably out of place.  zh-CN first, one English line after; the patient's language setting
comes with patient accounts (issue 5, item 2).
"""

from __future__ import annotations

from collections.abc import Callable

#: builds the message from the code and its validity in minutes
MessageBuilder = Callable[[str, int], str]

PLATFORM_NAME_ZH = "区域健康信息平台"
PLATFORM_NAME_EN = "HealthLink"


def authorisation_message(*, doctor: str, institution: str, purpose: str,
                          purpose_en: str | None = None) -> MessageBuilder:
    """A builder for the message asking the patient to authorise ``doctor`` of ``institution``.

    ``purpose`` is shown as given in the Chinese text, ``purpose_en`` (default: ``purpose``) in
    the English line; names stay as written in both."""
    purpose_en = purpose_en or purpose

    def build(code: str, minutes: int) -> str:
        return (
            f"【{PLATFORM_NAME_ZH}】{institution} {doctor} 医生申请查看您在其他医疗机构的健康记录，"
            f"用途：{purpose}。验证码 {code}，{minutes} 分钟内有效。"
            f"如您此刻未在该医生处就诊，请勿告知任何人。\n"
            f"{PLATFORM_NAME_EN}: Dr {doctor} ({institution}) asks to see your records from other "
            f"institutions for: {purpose_en}. Code {code}, valid {minutes} min. "
            f"Do not share it unless you are with this doctor now."
        )

    return build
