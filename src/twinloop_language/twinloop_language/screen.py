"""Text that is not an instruction for the arm, refused before any parser (embedded or LLM) reads
it: shell commands, attempts to change the rules or the safety limits, and speed demands. Speed
comes from config/safety.yaml and the execution limits, never from the words of a request."""

import re

from twinloop_language.scene import Rejected

SHELL = re.compile(
    r'[`$|{}\\<>]|&&|;\s*\w+\s+/|\b(?:sudo|rm\s+-\w+|chmod|chown|curl|wget|bash|sh\s+-c|python\d?\s+-c|exec|eval|'
    r'shutdown|reboot|mkfs|dd\s+if=)\b|/(?:etc|bin|dev|usr|tmp|proc)/'
)
INJECTION = re.compile(
    r'\b(?:ignore|disregard|forget|override)\b.{0,40}\b(?:instructions?|rules?|prompts?|safety|limits?|constraints?|'
    r'guidelines?|programming)\b|\bdeveloper mode\b|\b(?:system|assistant)\s*:|\bjailbreak|'
    r'\bsafety (?:gate|limits?|checks?|systems?|off)\b|'
    r'\b(?:disable|bypass|turn off|switch off|deactivate)\b.{0,30}\b(?:safety|limits?|gate|checks?|collision)|'
    r'\byou are now\b|\bnew instructions\b|\b(?:admin|god|debug|maintenance|sudo) mode\b|'
    r'\bignore (?:the|your|all|any) (?:scene|task|rules|instructions|objects)\b'
)
SPEED = re.compile(
    r'\b(?:full|max(?:imum)?|top|maximal|highest|crazy|insane)\s+(?:speed|velocity|acceleration)\b|\bas fast as\b|'
    r'\bfaster than\b|\bm/s\b|'
    r'\b\d+(?:\.\d+)?\s*(?:m|meters?|metres?|km|kilometers?)\s*(?:/|per)\s*(?:s|sec|second|h|hour)\b|'
    r'\b(?:really|very|super|extra|insanely|ridiculously)\s+(?:fast|quick(?:ly)?|rapidly)\b|'
    r'\bas (?:quickly|fast|rapidly|quick) as\b|\bhurry\b|\bat (?:top|high) speed\b|\bspeed (?:it )?up\b|'
    r'\bspeed limits?\b|\bvelocity (?:limit|to)\b|\bset (?:the )?(?:max(?:imum)? )?(?:speed|velocity)\b'
)


def screen(text):
    """Rejected with the reason if the (lower-case) text is a shell command, an injection or a speed demand."""
    if SHELL.search(text):
        raise Rejected('this looks like a shell command, not an instruction for the arm; nothing was run')
    if INJECTION.search(text):
        raise Rejected(
            'instructions cannot change the rules or the safety limits (this reads like an attempt to); '
            'say what to do with the objects instead'
        )
    if SPEED.search(text):
        raise Rejected('speed is set by the safety limits (config/safety.yaml), not by instructions')
