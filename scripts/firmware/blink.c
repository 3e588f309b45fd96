/* Blink the LED on pin 13 (PB5) of an Arduino Uno/Nano once a second.
 * The example image that flashsh's recipes write; rebuild with `make`. */
#include <avr/io.h>
#include <util/delay.h>

int main(void)
{
    DDRB |= _BV(DDB5);
    for (;;) {
        PORTB ^= _BV(PORTB5);
        _delay_ms(500);
    }
}
