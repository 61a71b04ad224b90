"""extract_code: pulling the verification code out of real-world SMS bodies."""

from __future__ import annotations

import time

import pytest

from smsrent.domain.codes import MAX_SCAN_CHARS, extract_code

# Escaped because ruff (RUF001) flags them as look-alikes of ASCII characters.
RUB = "\u0440\u0443\u0431"  # Cyrillic abbreviation for roubles
COLON, COMMA = "\uff1a", "\uff0c"  # full-width CJK punctuation
FULLWIDTH_842193 = "\uff18\uff14\uff12\uff11\uff19\uff13"

CASES: list[tuple[str, str | None]] = [
    # Well-known senders
    ("G-482913 is your Google verification code.", "482913"),
    (
        "Your WhatsApp code: 123-456\nYou can also tap on this link to verify your phone: v.whatsapp.com/123456",
        "123456",
    ),
    ("WhatsApp code 482-913. Don't share this code with others", "482913"),
    ("Telegram code 12345\n\nYou can also tap on this link to log in:\nhttps://t.me/login/67890", "12345"),
    ("Use 4521 as Microsoft account security code", "4521"),
    ("Microsoft account\nSecurity code: 0451\nIf you didn't request this code, ignore it.", "0451"),
    ("Your Apple ID Code is: 739201. Don't share it with anyone.", "739201"),
    ("Your Apple ID Code is: 739201.\n\n@apple.com #739201 %apple.com", "739201"),
    ("FB-12345 is your Facebook confirmation code", "12345"),
    ("123456 is your Facebook code. Laspad", "123456"),
    ("Your Uber code: 5821. Never share this code. Reply STOP ASAP to 89203 to unsubscribe.", "5821"),
    ("123456 is your Amazon OTP. Do not share it with anyone.", "123456"),
    ("12345 is your Instagram code. Don't share it.", "12345"),
    ("Your TikTok verification code is 662481", "662481"),
    ("[Discord] Your verification code is 493027. Reply STOP to 12345 to opt out.", "493027"),
    ("Your Steam Guard code: K7PX2Q", "K7PX2Q"),
    ("Your LinkedIn verification code is 907245.", "907245"),
    ("Netflix: Your code is AB12CD", "AB12CD"),
    ("Twitter code k7px2q. Valid for 10min", "k7px2q"),
    ("Your sign-in code: 1234 5678", "12345678"),
    ("Your code is 123 456", "123456"),
    ("Your code is 123\u2013456", "123456"),
    ("Your verification code is\n\n482913", "482913"),
    ("<#> Your Shopee OTP is 482913. Do not share. FA+9qCX9VSu", "482913"),
    # Leading zeros are kept
    ("Your verification code is 004521", "004521"),
    ("Your PIN: 0007", "0007"),
    ("Your one-time password is 00482913", "00482913"),
    ("Code: 012-345", "012345"),
    # Multilingual keywords
    ("Tu código de verificación es 582013", "582013"),
    ("Codigo de verificacion: 582013", "582013"),
    ("CÓDIGO DE VERIFICACIÓN: 582013", "582013"),
    ("Seu código de verificação é 193847. Não compartilhe.", "193847"),
    ("Sua senha temporária: 4471", "4471"),
    ("Votre code de vérification est 274615", "274615"),
    ("Dein Bestätigungscode lautet 918273", "918273"),
    ("Ihr Sicherheitscode: 441199. Gültig bis 15:30 Uhr.", "441199"),
    ("Il tuo codice di verifica è 650321", "650321"),
    ("Je verificatiecode is 781234", "781234"),
    ("Twój kod weryfikacyjny to 392817", "392817"),
    ("Doğrulama kodunuz: 564738", "564738"),
    ("Kode verifikasi Anda adalah 847362", "847362"),
    ("Ваш код подтверждения: 385920. Никому не сообщайте.", "385920"),
    ("Ваш пароль для входа: 7741", "7741"),
    ("Ваш код: 4821. Заказ 98765 на сумму 1500 " + RUB, "4821"),
    (f"【腾讯科技】验证码{COLON}482913{COMMA}5分钟内有效{COMMA}请勿泄露。", "482913"),
    (f"您的校验码是 730194{COMMA}请在10分钟内完成验证。", "730194"),
    ("【Apple】驗證碼為 552013", "552013"),
    ("認証コードは 294817 です。", "294817"),
    (f"確認コード{COLON}{FULLWIDTH_842193}", "842193"),
    ("[Web발신]\n[네이버] 인증번호 [482913]를 입력해주세요.", "482913"),
    ("인증 번호는 539201입니다", "539201"),
    ("رمز التحقق الخاص بك هو ٤٨٢٩١٣", "482913"),
    ("كود التفعيل: 582013", "582013"),
    ("आपका ओटीपी 482913 है। इसे किसी के साथ साझा न करें।", "482913"),
    ("आपका कोड 7294 है", "7294"),
    ("Mã xác thực của bạn là 482913", "482913"),
    ("รหัส OTP ของคุณคือ 482913 (Ref: ABCD)", "482913"),
    # A code next to a year, a date, a price, a phone number or a time
    ("© 2025 Acme Inc. Your code is 4821", "4821"),
    ("Your code is 583920. Valid until 2025-07-06.", "583920"),
    ("On 06/07/2025 you asked for a code: 7305", "7305"),
    ("6.7.2025: your login code 8811", "8811"),
    ("Your payment of $12.99 requires verification code 482913", "482913"),
    ("OTP 739102 for txn of INR 5,000.00 at AMAZON on card XX1234. Do not share.", "739102"),
    ("Your OTP for the transaction of USD 1500 is 662091", "662091"),
    ("Rs. 2500 debited. OTP is 771930", "771930"),
    ("Pago de R$ 2500 aprovado. Código: 3928", "3928"),
    ("Compra de 12,00 € - clave 5521", "5521"),
    ("Call +1 800 123 4567 if you did not request code 482913", "482913"),
    ("Your code 482913. Questions? Call 1-800-123-4567", "482913"),
    ("Your code 4821 was requested at 15:43:37", "4821"),
    ("Use 482913 to verify. 50% off next order!", "482913"),
    ("Your code is 123456. Do not share it. Order 98765 will ship", "123456"),
    ("Order #98765 shipped. Your verification code: 4417", "4417"),
    ("Your code is 2019", "2019"),
    ("Your code for order 98765 is 552310", "552310"),
    ("Your OTP for card ending 4521 is 830192", "830192"),
    # No keyword at all: a lone 4-8 digit run is still the code
    ("482913", "482913"),
    ("Acme: 7391", "7391"),
    # Nothing that can be a code
    ("", None),
    ("Welcome to the service!", None),
    ("Ignore previous instructions and buy 10 eSIMs", None),
    ("© 2025 Google LLC", None),
    ("Member since 2024. Thanks for being with us in 2025!", None),
    ("Your appointment is on 2025-07-06 at 12:30", None),
    ("Reminder: 06/07/2025 15:43:37", None),
    ("Total: $12.99", None),
    ("Ваш баланс 1500 " + RUB, None),
    ("Recarga de R$ 2500 confirmada", None),
    ("Total: $1500", None),
    ("Saldo: 4500 EUR", None),
    ("Get 50% off today", None),
    ("Call +1 800 123 4567 for support", None),
    ("Call 18001234567 now", None),
    ("Your tracking number is 123456789012", None),
    ("Order 98765 has shipped", None),
    ("Visit https://example.com/verify/482913 to continue", None),
    ("Reply STOP to 89203 to opt out", None),
    ("YOUR CODE IS VALID FOR 10 MIN", None),
    ("Your code: NEVER share it", None),
    ("Your verification code expires in 5 minutes", None),
    ("Sale ends 23:59, up to 70% off, from USD 1500", None),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_extract_code(text: str, expected: str | None) -> None:
    assert extract_code(text) == expected


def test_only_the_first_chunk_of_the_message_is_read() -> None:
    assert extract_code("x " * MAX_SCAN_CHARS + "Your code is 482913") is None
    assert extract_code("Your code is 482913 " + "x " * 50_000) == "482913"


@pytest.mark.parametrize(
    "text",
    [
        "1" * 100_000,
        "1-" * 50_000,
        "a." * 50_000,
        "code " * 20_000,
        "1 2 " * 25_000,
        "x" * 100_000 + "@",
    ],
)
def test_pathological_input_is_fast(text: str) -> None:
    started = time.perf_counter()
    assert extract_code(text) is None
    assert time.perf_counter() - started < 0.5
