<?php
// PHP's SoapClient in WSDL mode, as an unmodified integration uses it: constructed with the
// WSDL URL of the endpoint it is given (here imsbridge), it fetches the WSDL, then calls the
// address the WSDL names. Prints one JSON line of what it saw.
//
// Environment: IMSBRIDGE_URL, LOGIN, PASSWORD.

$url = getenv('IMSBRIDGE_URL');
$credential = getenv('LOGIN') . '/' . getenv('PASSWORD');
$report = [];

$client = new SoapClient("$url/nl/jsp/schemawsdl.jsp?schema=nms:rtEvent", [
    'trace' => true,
    'exceptions' => true,
    'cache_wsdl' => WSDL_CACHE_NONE,
]);
$event = ['any' => '<rtEvent type="order" email="php-soapclient@example.com"/>'];

$result = $client->PushEvent(['sessiontoken' => $credential, 'domEvent' => $event]);
$report['plId'] = (string) $result->plId;

try {
    $client->PushEvent(['sessiontoken' => getenv('LOGIN') . '/wrong', 'domEvent' => $event]);
    $report['wrongPassword'] = 'no fault';
} catch (SoapFault $fault) {
    $report['wrongPassword'] = $fault->getMessage();
    $report['faultcode'] = $fault->faultcode;
    $report['detail'] = isset($fault->detail) ? (is_string($fault->detail) ? $fault->detail : json_encode($fault->detail)) : null;
}

echo json_encode($report), "\n";
