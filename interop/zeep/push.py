"""Python's zeep in WSDL mode, as an unmodified integration uses it: constructed with the WSDL
URL of the endpoint it is given (here imsbridge), it fetches the WSDL, then calls the address
the WSDL names. Prints one JSON line of what it saw.

Environment: IMSBRIDGE_URL, LOGIN, PASSWORD (a caller with login/password), LOGON_LOGIN,
LOGON_PASSWORD (a caller that logs on).
"""

import json
import os

from lxml import etree
from zeep import Client
from zeep.exceptions import Fault

url = os.environ["IMSBRIDGE_URL"]
login, password = os.environ["LOGIN"], os.environ["PASSWORD"]
report = {}

client = Client(f"{url}/nl/jsp/schemawsdl.jsp?schema=nms:rtEvent")
event = etree.fromstring('<rtEvent type="order" email="zeep@example.com"/>')

result = client.service.PushEvent(
    sessiontoken=f"{login}/{password}", domEvent={"_value_1": event}
)
report["plId"] = str(result)

try:
    client.service.PushEvent(sessiontoken=f"{login}/wrong", domEvent={"_value_1": event})
    report["wrongPassword"] = "no fault"
except Fault as fault:
    report["wrongPassword"] = fault.message
    report["faultcode"] = fault.code
    report["detail"] = None if fault.detail is None else etree.tostring(fault.detail).decode()

# Logon, PushEvent with the session it gave, Logoff; then the session is refused.
session = Client(f"{url}/nl/jsp/schemawsdl.jsp?schema=xtk:session")
logon = session.service.Logon(
    sessiontoken="",
    strLogin=os.environ["LOGON_LOGIN"],
    strPassword=os.environ["LOGON_PASSWORD"],
    elemParameters={"_value_1": etree.Element("parameters")},
)
token = logon.pstrSessionToken
report["sessionToken"] = token[:5]
report["securityToken"] = logon.pstrSecurityToken[:5]
report["sessionPlId"] = str(
    client.service.PushEvent(sessiontoken=token, domEvent={"_value_1": event})
)
session.service.Logoff(sessiontoken=token)
report["loggedOff"] = True
try:
    client.service.PushEvent(sessiontoken=token, domEvent={"_value_1": event})
    report["afterLogoff"] = "no fault"
except Fault as fault:
    report["afterLogoff"] = (
        fault.message if fault.detail is None else etree.tostring(fault.detail).decode()
    )

print(json.dumps(report))
