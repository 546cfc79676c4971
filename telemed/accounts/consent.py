"""The consent to the processing of personal data that a patient gives on registering
(Federal Law No. 152-FZ "On Personal Data", article 9): its text, in Russian (the one
that binds) and English, and its version.

Pure: no I/O. A registration names the version it agreed to; the account keeps that
version and the time, and the patient reads the text again in their profile. A new text
gets a new version (the old ones stay here: an account shows what it agreed to).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class ConsentText:
    version: str
    ru: str
    en: str


_V1_RU = """Согласие на обработку персональных данных

Я, регистрируясь в службе онлайн-консультаций, в соответствии со статьёй 9 Федерального
закона от 27.07.2006 № 152-ФЗ «О персональных данных» свободно, своей волей и в своём
интересе даю согласие оператору службы на обработку моих персональных данных.

Цели: запись на консультации и их проведение (видеосвязь и чат с врачом), передача врачу
моих медицинских документов, выдача заключения врача, уведомления о консультациях по SMS
и электронной почте.

Данные: фамилия, имя, отчество; дата рождения; номер телефона; адрес электронной почты;
сведения о состоянии здоровья, которые я сообщаю и которые содержатся в загружаемых мною
документах; записи консультаций, если я соглашусь на запись отдельно.

Действия: сбор, запись, систематизация, накопление, хранение, уточнение, использование,
передача врачам и медицинским центрам, участвующим в моих консультациях, обезличивание,
блокирование, удаление и уничтожение, с использованием средств автоматизации и без них.

Сведения о состоянии здоровья обрабатываются в медицинских целях лицами, профессионально
занимающимися медицинской деятельностью и обязанными сохранять врачебную тайну.

Согласие действует до его отзыва. Я могу отозвать его, направив оператору заявление;
после отзыва данные удаляются, кроме тех, которые закон обязывает хранить."""

_V1_EN = """Consent to the processing of personal data

By registering with the online consultation service I freely, of my own will and in my
own interest, give the service's operator my consent to the processing of my personal
data, under article 9 of Russian Federal Law No. 152-FZ of 27.07.2006 "On Personal Data".

Purposes: booking and holding consultations (video calls and chat with a doctor), passing
my medical documents to the doctor, issuing the doctor's conclusion, notifications about
consultations by SMS and e-mail.

Data: full name; date of birth; phone number; e-mail address; information about my health
that I give and that is in the documents I upload; recordings of consultations, if I agree
to recording separately.

Actions: collection, recording, organisation, accumulation, storage, correction, use,
transfer to the doctors and medical centres taking part in my consultations,
anonymisation, blocking, deletion and destruction, with and without automated means.

Information about health is processed for medical purposes by persons professionally
engaged in medical practice and bound by medical confidentiality.

The consent is valid until I withdraw it. I may withdraw it by a written request to the
operator; then the data are deleted, except those the law requires to be kept."""

TEXTS: Final = {
    "2026-12-01": ConsentText(version="2026-12-01", ru=_V1_RU, en=_V1_EN),
}
CURRENT: Final = TEXTS["2026-12-01"]
"""The text a registration agrees to now."""
