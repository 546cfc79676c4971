"""What notifications say, in Russian and English: the bell/e-mail title, the text, the SMS.

Pure: no I/O. Times in ``params`` are aware datetimes and are shown in the recipient's
time zone with Russian or English month names written out here (no locale database
needed). SMS texts are kept short: Cyrillic SMS segments hold only 70 characters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, tzinfo
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MOSCOW = "Europe/Moscow"


class NotificationKind(StrEnum):
    """The events that notify someone; the value is stored as ``Notification.kind``."""

    CONSULTATION_REQUESTED = "consultation_requested"  # patient: the request was received
    NEW_REQUEST = "new_request"  # the centre's doctors: a request to review
    NEW_REFERRALS = "new_referrals"  # the centre's doctors: an import brought referrals
    NEW_BOOKING = "new_booking"  # a duty doctor: a patient booked a slot
    SCHEDULED = "scheduled"  # patient: a time was set
    RESCHEDULED = "rescheduled"  # patient: the time changed
    CANCELLED = "cancelled"  # the other side (patient or doctor): it was cancelled
    NO_SHOW = "no_show"  # the patient: the consultation's time passed without them
    DECLINED = "declined"  # patient: the centre refused the request
    REMINDER_24H = "reminder_24h"
    REMINDER_1H = "reminder_1h"
    CONCLUSION_ISSUED = "conclusion_issued"  # patient: the written conclusion is ready
    REFERRAL_CREDENTIALS = "referral_credentials"  # referred patient: login and password
    NEW_CREDENTIALS = "new_credentials"  # referred patient: a manager issued a new password
    # Anyone who asked: the code to set a new password (a kind's name, not a password).
    PASSWORD_RESET_CODE = "password_reset_code"  # noqa: S105
    SLA_OVERDUE = "sla_overdue"  # managers: a request waits past its deadline


@dataclass(frozen=True)
class RenderedText:
    title: str  # short: the bell and the e-mail subject
    body: str  # the in-app and e-mail text
    sms: str  # a short SMS


# Months in the genitive case, as dates are written in Russian ("3 декабря").
RU_MONTHS = (
    "января",
    "февраля",
    "марта",
    "апреля",
    "мая",
    "июня",
    "июля",
    "августа",
    "сентября",
    "октября",
    "ноября",
    "декабря",
)
EN_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

# Russian time zones by the name people use for them. Elsewhere: the UTC offset (ru) or
# the city of the IANA name (en).
ZONE_NAMES: dict[str, tuple[str, str]] = {
    "Europe/Kaliningrad": ("Калининград", "Kaliningrad"),
    MOSCOW: ("Москва", "Moscow"),
    "Europe/Kirov": ("Киров", "Kirov"),
    "Europe/Volgograd": ("Волгоград", "Volgograd"),
    "Europe/Astrakhan": ("Астрахань", "Astrakhan"),
    "Europe/Saratov": ("Саратов", "Saratov"),
    "Europe/Ulyanovsk": ("Ульяновск", "Ulyanovsk"),
    "Europe/Samara": ("Самара", "Samara"),
    "Asia/Yekaterinburg": ("Екатеринбург", "Yekaterinburg"),
    "Asia/Omsk": ("Омск", "Omsk"),
    "Asia/Novosibirsk": ("Новосибирск", "Novosibirsk"),
    "Asia/Barnaul": ("Барнаул", "Barnaul"),
    "Asia/Tomsk": ("Томск", "Tomsk"),
    "Asia/Novokuznetsk": ("Новокузнецк", "Novokuznetsk"),
    "Asia/Krasnoyarsk": ("Красноярск", "Krasnoyarsk"),
    "Asia/Irkutsk": ("Иркутск", "Irkutsk"),
    "Asia/Chita": ("Чита", "Chita"),
    "Asia/Yakutsk": ("Якутск", "Yakutsk"),
    "Asia/Khandyga": ("Хандыга", "Khandyga"),
    "Asia/Vladivostok": ("Владивосток", "Vladivostok"),
    "Asia/Ust-Nera": ("Усть-Нера", "Ust-Nera"),
    "Asia/Sakhalin": ("Сахалин", "Sakhalin"),
    "Asia/Magadan": ("Магадан", "Magadan"),
    "Asia/Srednekolymsk": ("Среднеколымск", "Srednekolymsk"),
    "Asia/Kamchatka": ("Камчатка", "Kamchatka"),
    "Asia/Anadyr": ("Анадырь", "Anadyr"),
}


def load_zone(name: str) -> tzinfo:
    """The zone named ``name``; an unknown name falls back to Moscow time."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(MOSCOW)


def _offset(delta: timedelta | None, prefix: str) -> str:
    minutes = int((delta or timedelta()).total_seconds() // 60)
    if minutes == 0:
        return prefix
    sign = "+" if minutes > 0 else "−"
    hours, rest = divmod(abs(minutes), 60)
    return f"{prefix}{sign}{hours}" + (f":{rest:02d}" if rest else "")


def zone_label(moment: datetime, time_zone: str, locale: str) -> str:
    """How the zone of ``moment`` is named in a sentence: "Москва", "Moscow", "UTC+5"."""
    if time_zone in ZONE_NAMES:
        ru_name, en_name = ZONE_NAMES[time_zone]
        return ru_name if locale == "ru" else en_name
    local = moment.astimezone(load_zone(time_zone))
    if locale != "ru" and "/" in time_zone:
        return time_zone.rsplit("/", 1)[1].replace("_", " ")
    return _offset(local.utcoffset(), "UTC")


def format_datetime(moment: datetime, *, locale: str, time_zone: str) -> str:
    """ "3 декабря 2026 г., 14:30 (Москва)" / "3 December 2026, 14:30 (Moscow)"."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime in notification params")
    local = moment.astimezone(load_zone(time_zone))
    zone = zone_label(moment, time_zone, locale)
    if locale == "ru":
        day = f"{local.day} {RU_MONTHS[local.month - 1]} {local.year} г."
    else:
        day = f"{local.day} {EN_MONTHS[local.month - 1]} {local.year}"
    return f"{day}, {local:%H:%M} ({zone})"


def format_short(moment: datetime, *, locale: str, time_zone: str) -> str:
    """For SMS: "03.12 в 14:30 (МСК+2)" / "3 Dec, 14:30 (Moscow)"."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime in notification params")
    local = moment.astimezone(load_zone(time_zone))
    if locale == "ru":
        if time_zone in ZONE_NAMES:
            moscow = moment.astimezone(ZoneInfo(MOSCOW)).utcoffset() or timedelta()
            zone = _offset((local.utcoffset() or timedelta()) - moscow, "МСК")
        else:
            zone = _offset(local.utcoffset(), "UTC")
        return f"{local:%d.%m} в {local:%H:%M} ({zone})"
    zone = zone_label(moment, time_zone, locale)
    return f"{local.day} {EN_MONTHS[local.month - 1][:3]}, {local:%H:%M} ({zone})"


def format_date(day: date, *, locale: str) -> str:
    if locale == "ru":
        return f"{day.day} {RU_MONTHS[day.month - 1]} {day.year} г."
    return f"{day.day} {EN_MONTHS[day.month - 1]} {day.year}"


class _Params:
    """The params of one text, each formatted for the recipient."""

    def __init__(
        self,
        kind: NotificationKind,
        params: Mapping[str, object],
        locale: str,
        time_zone: str,
        brand: str,
    ) -> None:
        self.kind = kind
        self.params = params
        self.locale = locale
        self.time_zone = time_zone
        self.brand = brand

    def has(self, name: str) -> bool:
        value = self.params.get(name)
        return value is not None and value != ""

    def __getitem__(self, name: str) -> str:
        """The param as text (times in full); a missing one is a bug in the caller."""
        if not self.has(name):
            raise ValueError(f"the {self.kind} notification needs the param {name!r}")
        value = self.params[name]
        if isinstance(value, datetime):
            return format_datetime(value, locale=self.locale, time_zone=self.time_zone)
        if isinstance(value, date):
            return format_date(value, locale=self.locale)
        return str(value).strip()

    @property
    def amended(self) -> bool:
        """A later version of something issued before (``version`` > 1)."""
        version = self.params.get("version")
        return isinstance(version, int) and version > 1

    def short(self, name: str) -> str:
        """A time in the short SMS form."""
        value = self.params.get(name)
        if not isinstance(value, datetime):
            raise ValueError(f"the {self.kind} notification needs the time {name!r}")
        return format_short(value, locale=self.locale, time_zone=self.time_zone)

    def opt(self, name: str, template: str) -> str:
        """``template`` with ``{}`` replaced by the param, or "" when there is none."""
        return template.format(self[name]) if self.has(name) else ""

    def sentence(self, name: str, template: str) -> str:
        """Like ``opt``, for a free-text param that should end as a sentence."""
        if not self.has(name):
            return ""
        text = self[name]
        if text[-1] not in ".!?…":
            text += "."
        return template.format(text)


TWO_CYRILLIC_SEGMENTS = 134
"""A Cyrillic SMS longer than 70 characters goes in segments of 67 (UCS-2): two of them."""
TWO_LATIN_SEGMENTS = 306
"""A Latin (GSM-7) SMS longer than 160 characters goes in segments of 153: two of them."""


def _fitted(p: _Params, template: str, limit: int) -> str:
    """``template`` with the centre's name in ``{centre}``, shortened (…) so that the
    whole SMS, the service's name before it included, fits ``limit`` characters; "the
    centre" when there is no name."""
    centre = p.params.get("centre")
    name = str(centre).strip() if centre else ""
    room = limit - len(sms_prefix(p.brand)) - len(template.replace("{centre}", ""))
    if not name:
        name = "центр" if template.startswith("направление") else "the centre"
    elif len(name) > room:
        name = name[: max(room - 1, 8)].rstrip() + "…"
    return template.replace("{centre}", name)


Text = Callable[[_Params], RenderedText]
_RU: dict[NotificationKind, Text] = {}
_EN: dict[NotificationKind, Text] = {}


def _text(table: dict[NotificationKind, Text], kind: NotificationKind) -> Callable[[Text], Text]:
    def register(function: Text) -> Text:
        table[kind] = function
        return function

    return register


def ru(kind: NotificationKind) -> Callable[[Text], Text]:
    return _text(_RU, kind)


def en(kind: NotificationKind) -> Callable[[Text], Text]:
    return _text(_EN, kind)


K = NotificationKind

# ── Russian ─────────────────────────────────────────────────────────────────────────


@ru(K.CONSULTATION_REQUESTED)
def _ru_requested(p: _Params) -> RenderedText:
    return RenderedText(
        title="Заявка принята",
        body=(
            f"Ваша заявка на онлайн-консультацию{p.opt('centre', ' в «{}»')} принята. "
            "Врач изучит документы и назначит дату и время, мы сразу сообщим вам об этом."
            f"{p.opt('due', ' Ответ ожидается до {}.')}"
        ),
        sms="заявка принята. Врач назначит время, мы сообщим вам.",
    )


@ru(K.NEW_REQUEST)
def _ru_new_request(p: _Params) -> RenderedText:
    sms = (
        f"новая заявка, ответьте до {p.short('due')}."
        if p.has("due")
        else "новая заявка на консультацию. Назначьте время."
    )
    return RenderedText(
        title="Новая заявка на консультацию",
        body=(
            f"Поступила новая заявка на онлайн-консультацию{p.opt('centre', ' в «{}»')}. "
            "Пожалуйста, изучите документы пациента и назначьте дату и время."
            f"{p.opt('due', ' Ответить нужно до {}.')}"
        ),
        sms=sms,
    )


@ru(K.NEW_REFERRALS)
def _ru_new_referrals(p: _Params) -> RenderedText:
    return RenderedText(
        title=f"Новые направления: {p['count']}",
        body=(
            f"Поступили направления на онлайн-консультацию{p.opt('centre', ' в «{}»')}: "
            f"{p['count']}. Пожалуйста, изучите документы пациентов и назначьте дату и время."
            f"{p.opt('due', ' Ответить нужно до {}.')}"
        ),
        sms=f"новые направления ({p['count']}), ответьте до {p.short('due')}.",
    )


@ru(K.NEW_BOOKING)
def _ru_new_booking(p: _Params) -> RenderedText:
    return RenderedText(
        title="Новая запись на консультацию",
        body=(
            f"Пациент записался к вам на онлайн-консультацию: {p['when']}. "
            "Вопросы пациента и документы — на странице консультации."
        ),
        sms=f"новая запись на консультацию {p.short('when')}.",
    )


@ru(K.SCHEDULED)
def _ru_scheduled(p: _Params) -> RenderedText:
    return RenderedText(
        title="Консультация назначена",
        body=(
            f"Онлайн-консультация назначена на {p['when']}."
            f"{p.opt('doctor', ' Врач: {}.')} "
            "За 5–10 минут до начала проверьте камеру и микрофон."
            f"{p.opt('url', ' Ссылка для входа: {}')}"
        ),
        sms=f"консультация назначена на {p.short('when')}.",
    )


@ru(K.RESCHEDULED)
def _ru_rescheduled(p: _Params) -> RenderedText:
    return RenderedText(
        title="Время консультации изменено",
        body=(
            f"Онлайн-консультация перенесена{p.opt('previous_when', ' с {}')} "
            f"на {p['when']}.{p.opt('doctor', ' Врач: {}.')}"
            f"{p.sentence('reason', ' Причина: {}')} Приносим извинения за неудобства."
            f"{p.opt('url', ' Ссылка для входа: {}')}"
        ),
        sms=f"консультация перенесена на {p.short('when')}.",
    )


@ru(K.CANCELLED)
def _ru_cancelled(p: _Params) -> RenderedText:
    when_sms = f" {p.short('when')}" if p.has("when") else ""
    return RenderedText(
        title="Консультация отменена",
        body=(
            f"Онлайн-консультация{p.opt('when', ' на {}')} отменена."
            f"{p.sentence('reason', ' Причина: {}')} "
            "Подробности — в личном кабинете."
        ),
        sms=f"консультация{when_sms} отменена.",
    )


@ru(K.NO_SHOW)
def _ru_no_show(p: _Params) -> RenderedText:
    return RenderedText(
        title="Консультация не состоялась",
        body=(
            f"Вы не подключились к онлайн-консультации{p.opt('when', ' {}')}. "
            "Если она всё ещё нужна, запишитесь снова в личном кабинете."
        ),
        sms="консультация не состоялась. Запишитесь снова.",
    )


@ru(K.DECLINED)
def _ru_declined(p: _Params) -> RenderedText:
    return RenderedText(
        title="Заявка отклонена",
        body=(
            f"К сожалению, {p.opt('centre', '«{}»') or 'медицинский центр'} не может принять "
            f"вашу заявку на консультацию.{p.sentence('reason', ' Причина: {}')} "
            "Вы можете обратиться в другой центр или записаться к дежурному врачу."
        ),
        sms="заявка отклонена. Подробности в личном кабинете.",
    )


@ru(K.REMINDER_24H)
def _ru_reminder_24h(p: _Params) -> RenderedText:
    return RenderedText(
        title="Консультация завтра",
        body=(
            f"Напоминаем: онлайн-консультация назначена на {p['when']}."
            f"{p.opt('doctor', ' Врач: {}.')} "
            "Подготовьте документы и вопросы врачу, заранее проверьте камеру и микрофон."
            f"{p.opt('url', ' Ссылка для входа: {}')}"
        ),
        sms=f"напоминаем о консультации {p.short('when')}.",
    )


@ru(K.REMINDER_1H)
def _ru_reminder_1h(p: _Params) -> RenderedText:
    url = p.opt("url", " Вход: {}")
    return RenderedText(
        title="Консультация через час",
        body=(
            f"Онлайн-консультация начнётся через час: {p['when']}."
            f"{p.opt('doctor', ' Врач: {}.')} "
            "Войдите за несколько минут до начала и разрешите доступ к камере и микрофону."
            f"{p.opt('url', ' Ссылка для входа: {}')}"
        ),
        sms=f"консультация через час.{url}",
    )


@ru(K.CONCLUSION_ISSUED)
def _ru_conclusion(p: _Params) -> RenderedText:
    if p.amended:
        return RenderedText(
            title="Заключение обновлено",
            body=(
                f"Врач{p.opt('doctor', ' ({})')} дополнил заключение по вашей "
                "онлайн-консультации. Новую версию можно прочитать и скачать в личном "
                "кабинете, в разделе «Консультации»."
            ),
            sms="заключение врача обновлено. Оно доступно в личном кабинете.",
        )
    return RenderedText(
        title="Заключение готово",
        body=(
            f"Заключение врача{p.opt('doctor', ' ({})')} по вашей онлайн-консультации готово. "
            "Его можно прочитать и скачать в личном кабинете, в разделе «Консультации»."
        ),
        sms="заключение врача готово. Оно доступно в личном кабинете.",
    )


@ru(K.REFERRAL_CREDENTIALS)
def _ru_referral(p: _Params) -> RenderedText:
    return RenderedText(
        title="Направление на онлайн-консультацию",
        body=(
            "Здравствуйте! Лечащий врач направил вас на онлайн-консультацию"
            f"{p.opt('centre', ' в «{}»')} через службу «{p.brand}».\n"
            f"Вход в личный кабинет: {p['url']}\n"
            f"Логин: {p['login']}\n"
            f"Пароль: {p['password']}\n"
            "При первом входе смените пароль. Затем загрузите медицинские документы "
            "(выписки, заключения, результаты УЗИ, МРТ, КТ): врач изучит их и назначит "
            "дату и время консультации."
        ),
        sms=_fitted(
            p,
            "направление в {centre}, свяжутся за 2–4 дня. "
            f"{p['url']} логин {p['login']} пароль {p['password']}",
            TWO_CYRILLIC_SEGMENTS,
        ),
    )


@ru(K.NEW_CREDENTIALS)
def _ru_new_credentials(p: _Params) -> RenderedText:
    return RenderedText(
        title="Новый пароль для входа",
        body=(
            "Вам выдан новый временный пароль для входа в личный кабинет службы "
            f"«{p.brand}»; "
            "прежний пароль больше не действует.\n"
            f"Вход в личный кабинет: {p['url']}\n"
            f"Логин: {p['login']}\n"
            f"Пароль: {p['password']}\n"
            "При входе смените пароль."
        ),
        sms=(
            "новый временный пароль. "
            f"Вход: {p['url']} логин {p['login']}, пароль {p['password']}. "
            "Смените его при входе."
        ),
    )


@ru(K.PASSWORD_RESET_CODE)
def _ru_password_reset_code(p: _Params) -> RenderedText:
    # The code goes in the SMS only: the bell and the outbox's masked text say that one
    # was sent, which is what the account's owner should know if it was not them.
    return RenderedText(
        title="Код для смены пароля",
        body=(
            "Запрошена смена пароля: код отправлен по SMS"
            f"{p.opt('expires', ' и действует до {}')}. "
            "Если это были не вы, ничего не делайте: пароль останется прежним."
        ),
        sms=f"код для смены пароля {p['code']}. Никому его не сообщайте.",
    )


@ru(K.SLA_OVERDUE)
def _ru_sla_overdue(p: _Params) -> RenderedText:
    return RenderedText(
        title="Просрочен срок ответа на заявку",
        body=(
            f"Заявка на консультацию{p.opt('centre', ' в «{}»')} ждёт назначения времени "
            f"дольше положенного{p.opt('due', ': срок истёк {}')}. "
            "Пожалуйста, свяжитесь с центром."
        ),
        sms=f"просрочен срок ответа на заявку{p.opt('centre', ' в «{}»')}.",
    )


# ── English ─────────────────────────────────────────────────────────────────────────


@en(K.CONSULTATION_REQUESTED)
def _en_requested(p: _Params) -> RenderedText:
    return RenderedText(
        title="Request received",
        body=(
            f"Your request for an online consultation{p.opt('centre', ' at {}')} has been "
            "received. A doctor will review your documents and set a date and time; we will "
            f"let you know right away.{p.opt('due', ' You can expect an answer by {}.')}"
        ),
        sms="your consultation request has been received. We will tell you the time.",
    )


@en(K.NEW_REQUEST)
def _en_new_request(p: _Params) -> RenderedText:
    due_sms = f" by {p.short('due')}" if p.has("due") else ""
    return RenderedText(
        title="New consultation request",
        body=(
            f"A new online consultation request has arrived{p.opt('centre', ' at {}')}. "
            "Please review the patient's documents and set a date and time."
            f"{p.opt('due', ' Please respond by {}.')}"
        ),
        sms=f"new consultation request. Please set a time{due_sms}.",
    )


@en(K.NEW_REFERRALS)
def _en_new_referrals(p: _Params) -> RenderedText:
    return RenderedText(
        title=f"New referrals: {p['count']}",
        body=(
            f"Referrals for online consultations have arrived{p.opt('centre', ' at {}')}: "
            f"{p['count']}. Please review the patients' documents and set dates and times."
            f"{p.opt('due', ' Please respond by {}.')}"
        ),
        sms=f"new referrals ({p['count']}), please respond by {p.short('due')}.",
    )


@en(K.NEW_BOOKING)
def _en_new_booking(p: _Params) -> RenderedText:
    return RenderedText(
        title="New booking",
        body=(
            f"A patient has booked an online consultation with you for {p['when']}. "
            "Their questions and documents are on the consultation page."
        ),
        sms=f"a new consultation booking for {p.short('when')}.",
    )


@en(K.SCHEDULED)
def _en_scheduled(p: _Params) -> RenderedText:
    return RenderedText(
        title="Consultation scheduled",
        body=(
            f"Your online consultation is scheduled for {p['when']}."
            f"{p.opt('doctor', ' Doctor: {}.')} "
            "Please check your camera and microphone 5–10 minutes before it starts."
            f"{p.opt('url', ' Join here: {}')}"
        ),
        sms=f"your consultation is scheduled for {p.short('when')}.",
    )


@en(K.RESCHEDULED)
def _en_rescheduled(p: _Params) -> RenderedText:
    return RenderedText(
        title="Consultation time changed",
        body=(
            f"Your online consultation has been moved{p.opt('previous_when', ' from {}')} "
            f"to {p['when']}.{p.opt('doctor', ' Doctor: {}.')}"
            f"{p.sentence('reason', ' Reason: {}')} We apologise for the inconvenience."
            f"{p.opt('url', ' Join here: {}')}"
        ),
        sms=f"your consultation has been moved to {p.short('when')}.",
    )


@en(K.CANCELLED)
def _en_cancelled(p: _Params) -> RenderedText:
    when_sms = f" on {p.short('when')}" if p.has("when") else ""
    return RenderedText(
        title="Consultation cancelled",
        body=(
            f"The online consultation{p.opt('when', ' on {}')} has been cancelled."
            f"{p.sentence('reason', ' Reason: {}')} "
            "Details are in your account."
        ),
        sms=f"the consultation{when_sms} has been cancelled.",
    )


@en(K.NO_SHOW)
def _en_no_show(p: _Params) -> RenderedText:
    return RenderedText(
        title="Consultation missed",
        body=(
            f"You did not join the online consultation{p.opt('when', ' on {}')}. "
            "If you still need it, please book again in your account."
        ),
        sms="the consultation did not take place. Please book again.",
    )


@en(K.DECLINED)
def _en_declined(p: _Params) -> RenderedText:
    return RenderedText(
        title="Request declined",
        body=(
            f"Unfortunately, {p.opt('centre', '{}') or 'the medical centre'} cannot accept "
            f"your consultation request.{p.sentence('reason', ' Reason: {}')} "
            "You can apply to another centre or book a duty doctor."
        ),
        sms="your consultation request was declined. See your account for details.",
    )


@en(K.REMINDER_24H)
def _en_reminder_24h(p: _Params) -> RenderedText:
    return RenderedText(
        title="Consultation tomorrow",
        body=(
            f"A reminder: your online consultation is on {p['when']}."
            f"{p.opt('doctor', ' Doctor: {}.')} "
            "Have your documents and questions ready, and check your camera and microphone "
            f"in advance.{p.opt('url', ' Join here: {}')}"
        ),
        sms=f"a reminder of your consultation on {p.short('when')}.",
    )


@en(K.REMINDER_1H)
def _en_reminder_1h(p: _Params) -> RenderedText:
    return RenderedText(
        title="Consultation in one hour",
        body=(
            f"Your online consultation starts in one hour: {p['when']}."
            f"{p.opt('doctor', ' Doctor: {}.')} "
            "Please join a few minutes early and allow access to the camera and microphone."
            f"{p.opt('url', ' Join here: {}')}"
        ),
        sms=f"your consultation starts in one hour.{p.opt('url', ' Join: {}')}",
    )


@en(K.CONCLUSION_ISSUED)
def _en_conclusion(p: _Params) -> RenderedText:
    if p.amended:
        return RenderedText(
            title="Conclusion updated",
            body=(
                f"The doctor{p.opt('doctor', ' ({})')} has updated the conclusion on your "
                "online consultation. You can read and download the new version in your "
                "account, under Consultations."
            ),
            sms="the doctor's conclusion has been updated in your account.",
        )
    return RenderedText(
        title="Conclusion ready",
        body=(
            f"The doctor's conclusion{p.opt('doctor', ' ({})')} on your online consultation "
            "is ready. You can read and download it in your account, under Consultations."
        ),
        sms="the doctor's conclusion is ready in your account.",
    )


@en(K.REFERRAL_CREDENTIALS)
def _en_referral(p: _Params) -> RenderedText:
    return RenderedText(
        title="Referral to an online consultation",
        body=(
            "Hello! Your doctor has referred you to an online consultation"
            f"{p.opt('centre', ' at {}')} through the {p.brand} service.\n"
            f"Sign in at: {p['url']}\n"
            f"Login: {p['login']}\n"
            f"Password: {p['password']}\n"
            "Please change the password when you first sign in. Then upload your medical "
            "documents (discharge summaries, conclusions, ultrasound, MRI, CT results): a "
            "doctor will review them and set a date and time for the consultation."
        ),
        sms=_fitted(
            p,
            "referral to {centre}; you will be contacted within 2-4 days. "
            f"{p['url']} login {p['login']} password {p['password']}",
            TWO_LATIN_SEGMENTS,
        ),
    )


@en(K.NEW_CREDENTIALS)
def _en_new_credentials(p: _Params) -> RenderedText:
    return RenderedText(
        title="New sign-in password",
        body=(
            f"You have been given a new temporary password for your {p.brand} account; the "
            "previous one no longer works.\n"
            f"Sign in at: {p['url']}\n"
            f"Login: {p['login']}\n"
            f"Password: {p['password']}\n"
            "Please change the password when you sign in."
        ),
        sms=(
            "a new temporary password. "
            f"Sign in: {p['url']} login {p['login']}, password {p['password']}. "
            "Change it when you sign in."
        ),
    )


@en(K.PASSWORD_RESET_CODE)
def _en_password_reset_code(p: _Params) -> RenderedText:
    return RenderedText(
        title="Password reset code",
        body=(
            "A password reset was requested: the code was sent by SMS"
            f"{p.opt('expires', ' and is valid until {}')}. "
            "If it was not you, do nothing: your password stays as it is."
        ),
        sms=f"your password reset code is {p['code']}. Do not share it with anyone.",
    )


@en(K.SLA_OVERDUE)
def _en_sla_overdue(p: _Params) -> RenderedText:
    return RenderedText(
        title="Response deadline missed",
        body=(
            f"A consultation request{p.opt('centre', ' at {}')} has waited for a time "
            f"longer than allowed{p.opt('due', ': the deadline was {}')}. "
            "Please contact the centre."
        ),
        sms=f"a request{p.opt('centre', ' at {}')} is past its response deadline.",
    )


def sms_prefix(brand: str) -> str:
    """Every SMS starts with the service's name: the patient sees who writes."""
    return f"{brand}: "


def render(
    kind: NotificationKind,
    *,
    locale: str,
    params: Mapping[str, object],
    time_zone: str,
    brand: str,
) -> RenderedText:
    """The texts of ``kind`` in ``locale`` (``ru``, else English), times in ``time_zone``,
    naming the service ``brand`` (``TELEMED_BRAND_NAME``).

    Raises ``ValueError`` when a param the text needs is missing (a caller's bug).
    """
    kind = NotificationKind(kind)
    table = _RU if locale == "ru" else _EN
    text = table[kind](_Params(kind, params, "ru" if locale == "ru" else "en", time_zone, brand))
    return replace(text, sms=sms_prefix(brand) + text.sms)


def email_text(body: str, *, locale: str, brand: str) -> str:
    """An e-mail's text: the notification's text and a short signature."""
    if locale == "ru":
        signature = (
            f"Служба онлайн-консультаций «{brand}».\n"
            "Письмо отправлено автоматически, отвечать на него не нужно."
        )
    else:
        signature = (
            f"{brand} online consultation service.\n"
            "This message was sent automatically; please do not reply."
        )
    return f"{body}\n\n-- \n{signature}\n"
